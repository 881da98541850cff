"""Widgets and live displays: thin layers that wire controls to the library's pure functions.

- `oneshot`: `one_shot_widget`: amount slider + criterion dropdown -> `oneshot.one_shot` (notebook 02).
- `recovery`: `recovery_widget`: prune at once, fine-tune live, Stop (notebook 03).
- `live`: `LiveSawtooth`, a `prune_train_repeat` callback that redraws the sawtooth after each iteration.

Only these modules import ipywidgets or IPython.
"""
