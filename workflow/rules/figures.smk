# (rules of this stage are added here)
