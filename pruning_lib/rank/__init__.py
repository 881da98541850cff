"""Rank: one statistics pass over the data (`stats`), the criteria computed from it (`criteria`), the oracle and the
paper's Table 1 (`oracle`), and the one masking function, channels zeroed where they are read (`masking`)."""
