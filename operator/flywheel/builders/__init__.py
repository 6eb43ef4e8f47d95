"""Pure functions from a spec (and Settings) to the child objects it needs.

No I/O and no kopf here (an import-linter contract keeps it so): what these
return is what the operator applies, and the unit tests compare it with golden
files."""
