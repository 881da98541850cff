"""Rank: the criteria from one statistics pass (`criteria`), the oracle and the paper's Table 1 (`oracle`), and the
one masking function, channels zeroed where they are read (`masking`)."""
