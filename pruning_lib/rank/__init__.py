"""Rank: the criteria from one statistics pass (`criteria`), the oracle and the paper's Table 1 (`oracle`)."""
