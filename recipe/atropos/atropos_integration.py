"""The names users import from the recipe's first layout: the trajectory API client and the advantage rule.

The client lives in `recipe.atropos.data.trajectory_api_client`, the rule in `recipe.atropos.atropos_core_algos`.
"""

from recipe.atropos.atropos_core_algos import AtroposGRPOComputer
from recipe.atropos.data.scored_group import AtroposBatch
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient, ClientStats

__all__ = ["AtroposBatch", "AtroposEnvironmentClient", "AtroposGRPOComputer", "ClientStats"]
