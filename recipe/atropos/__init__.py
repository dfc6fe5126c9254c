"""verl recipe: GRPO on rollouts from Atropos environments."""
