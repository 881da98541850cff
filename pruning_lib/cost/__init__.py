"""Cost: what a network's widths cost in time, parameters and FLOPs, and the end-to-end judge.

- `network`: a network analysed once; every tensor's shape, its parameters and its FLOPs under any widths.
- `blocks`: the pieces its time is the sum of (a conv with its BatchNorm and activation, an addition, ...).
- `entries`: each block's time at its sizes, measured alone on this machine, kept on disk.
- `latency`: `LatencyModel`, the sum of the blocks calibrated by one end-to-end measurement.
"""
