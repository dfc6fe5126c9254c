"""Atropos environments shipped with the recipe (each a real `atroposlib.envs.BaseEnv`)."""
