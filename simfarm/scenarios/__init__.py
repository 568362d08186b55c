"""Python code of the bundled hindsight scenarios (outcome functions, instance generators)."""
