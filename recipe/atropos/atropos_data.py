"""`scored_data_to_dataproto` under its first import path (it lives in `recipe.atropos.data.to_dataproto`)."""

from recipe.atropos.data.to_dataproto import scored_data_to_dataproto

__all__ = ["scored_data_to_dataproto"]
