# Shared helpers for the rule files. TARGETS collects what `rule all` builds; each rule
# file appends its own final outputs.
import json

TARGETS = []


def all_targets():
    return list(TARGETS)
