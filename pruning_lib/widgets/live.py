"""A live plot: the Prune–Train–Repeat sawtooth redrawn in the notebook after every iteration."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ..plots.basics import figure_png
from ..plots.iterative import draw_sawtooth

__all__ = ["LiveSawtooth"]


class LiveSawtooth:
    """A `prune_train_repeat` callback that redraws the sawtooth in the notebook after every iteration.

    It draws on a figure outside pyplot (so Jupyter does not show it twice), shows it as a PNG
    (which renders whatever the matplotlib backend) and updates that one display in place;
    `finish(history)` draws the final state (also when a finished run was simply resumed from
    its checkpoint and no iteration ran).
    """

    def __init__(self, title: str = "Prune–Train–Repeat, live", *, n_images: int | None = None):
        self.title, self.rows, self.handle, self.n_images = title, [], None, n_images

    def _draw(self, history: pd.DataFrame) -> None:
        from IPython.display import Image, display

        fig = Figure(figsize=(7, 3.8))
        ax = fig.subplots()
        draw_sawtooth(ax, history, n_images=self.n_images)
        ax.axhline(100 * history["accuracy_after_finetune"].iloc[0], color="gray", ls="--", lw=1,
                   label="before pruning")
        ax.set_title(f"{self.title} (iteration {int(history['iteration'].iloc[-1])})", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        image = Image(figure_png(fig, dpi=100))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)

    def on_start(self, history: pd.DataFrame, model) -> None:
        self.rows = history.to_dict(orient="records")
        self._draw(history)

    def on_iteration(self, row: dict, model) -> None:
        self.rows.append(row)
        self._draw(pd.DataFrame(self.rows))

    def finish(self, history: pd.DataFrame) -> None:
        self._draw(history)
