"""mfsym: symmetries in overparametrised networks, a mean-field reproduction toolkit."""

__version__ = "0.1.0"
