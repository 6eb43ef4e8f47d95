"""Pure decisions: numbers and states in, a decision with its reason out.
No I/O, no kopf, no clients (an import-linter contract keeps it so)."""
