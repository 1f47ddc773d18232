import sys

sys.path.insert(0, "/src")  # the repository's own modules, as pytest's rootdir would give them
