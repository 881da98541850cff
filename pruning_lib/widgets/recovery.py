"""The recovery widget (notebook 03): prune by any amount at once, then watch fine-tuning win the accuracy back.

The widget runs `recovery.prune_and_finetune` in a background thread, so the notebook stays
responsive and the Stop button works (it sets a flag that the step callback checks).  Avoid running
other cells that train or iterate the same loaders while it works.  ``background=False`` runs it
inside the button handler instead: then Jupyter processes no other click until it ends, so Stop
cannot be pressed, and the way out is the kernel's interrupt (■), which stops it at once.
"""

from __future__ import annotations

import base64
import html
import threading
from typing import Iterable, Sequence

import pandas as pd
import torch.nn as nn
from matplotlib.figure import Figure

from ..graph.groups import group_widths
from ..rank.criteria import CRITERIA
from ..recover.evaluation import evaluate
from ..measure.counting import count_flops, count_parameters
from ..plots.basics import figure_png
from ..plots.iterative import draw_recovery
from ..recover.recovery import RecoveryResult, prune_and_finetune

__all__ = ["RecoveryController", "recovery_widget"]


def _flops_text(gflops: float) -> str:
    return f"{gflops:.2f} GFLOPs" if gflops >= 1 else f"{1e3 * gflops:.1f} MFLOPs"


def _sizes_html(baseline: dict, pruned: dict, history: pd.DataFrame | None) -> str:
    """A small table: FLOPs, parameters and accuracy before and after pruning."""
    def ratio(a, b):
        return f" ({a / b:.1f}× fewer)" if b else ""

    acc0 = history[history["phase"] == "baseline"]["accuracy"] if history is not None else pd.Series([], dtype=float)
    rows = [("FLOPs / image", _flops_text(baseline["gflops"]),
             _flops_text(pruned["gflops"]) + ratio(baseline["gflops"], pruned["gflops"]) if pruned else "–"),
            ("parameters", f"{baseline['params']:,}",
             f"{pruned['params']:,}" + ratio(baseline["params"], pruned["params"]) if pruned else "–"),
            ("conv filters", f"{baseline['filters']:,}", f"{pruned['filters']:,}" if pruned else "–")]
    if len(acc0):
        after = history[history["phase"] != "baseline"]["accuracy"]
        rows.append(("val. accuracy", f"{100 * acc0.iloc[0]:.1f}%",
                     f"{100 * after.iloc[0]:.1f}% → {100 * after.iloc[-1]:.1f}%" if len(after) else "–"))
    cells = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                    for a, b, c in rows)
    return ("<table><tr><th></th><th>before</th><th>pruned (+ fine-tuned)</th></tr>" + cells + "</table>")


def _plot_png(history: pd.DataFrame, title: str, steps: int) -> bytes:
    fig = Figure(figsize=(6.2, 3.4))
    ax = fig.subplots()
    if len(history[history["phase"] != "baseline"]):
        draw_recovery(ax, history)
    else:
        ax.axhline(100 * history["accuracy"].iloc[0], color="gray", ls="--", lw=1, label="before pruning")
        ax.set(xlabel="fine-tuning step (batches)", ylabel="validation accuracy (%)")
        ax.text(0.5, 0.4, "press “Prune & fine-tune”", transform=ax.transAxes, ha="center", color="gray")
    ax.set_xlim(-0.5, max(steps, 1) + 0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return figure_png(fig)


class RecoveryController:
    """The widget's state and handlers; ``widget`` is what the notebook shows.

    ``press()`` is what the "Prune & fine-tune" button does, ``stop()`` what Stop does; ``run()``
    does the work synchronously (tests call it headless).  ``result`` holds the last `RecoveryResult`.
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, val_loader: Iterable, *, input_shape: Sequence[int],
                 amount: float = 0.5, criterion: str = "taylor", steps: int = 40,
                 criteria: Sequence[str] | None = None,
                 max_steps: int = 200, background: bool = True, **options):
        import ipywidgets as w

        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.options = {"input_shape": input_shape, **options}   # the rest of prune_and_finetune's arguments
        self.background, self.result, self.error, self.thread = background, None, None, None
        self._stop = threading.Event()
        self.amount = w.FloatSlider(value=amount, min=0.05, max=0.95, step=0.05, description="amount",
                                    readout_format=".0%", continuous_update=False,
                                    tooltip="fraction of all conv filters removed at once")
        self.criterion = w.Dropdown(options=list(criteria or CRITERIA), value=criterion, description="criterion")
        self.steps = w.IntSlider(value=steps, min=0, max=max_steps, step=5, description="fine-tune steps",
                                 style={"description_width": "initial"}, continuous_update=False)
        self.button = w.Button(description="Prune & fine-tune", button_style="primary", icon="scissors",
                               layout=w.Layout(width="auto"))
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=max(steps, 1), description="fine-tuning")
        self.status = w.HTML()
        self.sizes = w.HTML()
        self.plot = w.Output(layout={"width": "600px", "min_height": "330px"})
        self.button.on_click(lambda _: self.press())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = w.VBox([w.HBox([self.amount, self.criterion, self.steps]),
                              w.HBox([self.button, self.stop_button, self.progress, self.status]),
                              w.HBox([self.plot, self.sizes])])
        self.widget.controller = self
        baseline = {"gflops": count_flops(model, (1, *input_shape)) / 1e9,
                    "params": count_parameters(model), "filters": sum(group_widths(model).values())}
        accuracy = evaluate(model, val_loader)["accuracy"]
        start = pd.DataFrame([{"step": 0, "phase": "baseline", "accuracy": accuracy, "train_loss": float("nan")}])
        self._show(start, {"baseline": baseline, "pruned": {}}, "the baseline, before pruning")
        self.status.value = "ready"

    # -- drawing
    def _show(self, history: pd.DataFrame, info: dict, title: str | None = None) -> None:
        title = title or f"{self.criterion.value}: {self.amount.value:.0%} of the filters removed at once"
        png = base64.b64encode(_plot_png(history, title, self.steps.value)).decode()
        self.plot.outputs = ({"output_type": "display_data", "metadata": {},
                              "data": {"image/png": png, "text/plain": title}},)
        self.sizes.value = _sizes_html(info["baseline"], info["pruned"], history)

    def _progress(self, step: int, steps: int) -> None:
        self.progress.value = step

    # -- handlers
    def run(self, *, clear_stop: bool = True) -> RecoveryResult:
        """Prune & fine-tune with the current control values, updating the widget as it goes."""
        if clear_stop:
            self._stop.clear()
        self.progress.max, self.progress.value = max(self.steps.value, 1), 0
        self.status.value = "ranking and pruning…"
        result = prune_and_finetune(self.model, self.train_loader, self.val_loader, amount=self.amount.value,
                                    criterion=self.criterion.value, steps=self.steps.value,
                                    on_record=self._show, on_progress=self._progress,
                                    should_stop=self._stop.is_set, **self.options)
        self.result = result
        self.status.value = (f"{'stopped' if result.stopped else 'done'}: "
                             f"{100 * result.accuracy:.1f}% after {int(result.history['step'].iloc[-1])} steps")
        return result

    def _guarded_run(self) -> None:
        self.button.disabled, self.stop_button.disabled, self.error = True, False, None
        try:
            self.run(clear_stop=False)
        except Exception as err:  # shown in the widget: a thread's exception would vanish
            self.error = err
            self.status.value = f"<b>error</b>: {html.escape(f'{type(err).__name__}: {err}')}"
            if not self.background:
                raise
        finally:
            self.button.disabled, self.stop_button.disabled = False, True

    def press(self) -> None:
        """What the "Prune & fine-tune" button does (ignored while a run is in progress)."""
        if self.running:
            return
        self._stop.clear()      # here, not in the thread: a Stop pressed right after starting counts
        if self.background:
            self.button.disabled = True
            self.thread = threading.Thread(target=self._guarded_run, name="prune-and-finetune", daemon=True)
            self.thread.start()
        else:
            self._guarded_run()

    def stop(self) -> None:
        """What Stop does: fine-tuning ends after the current step."""
        self._stop.set()
        self.status.value = "stopping…"

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> RecoveryResult | None:
        """Block until a background run ends; returns its result."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.result


def recovery_widget(model: nn.Module, train_loader: Iterable, val_loader: Iterable, **settings):
    """The widget: amount slider, criterion dropdown, fine-tune steps, "Prune & fine-tune", Stop,
    a progress bar, a live plot of validation accuracy (the drop at the prune, then the recovery)
    and a table of FLOPs, parameters and accuracy before and after.

    `settings`: ``input_shape`` (required), the controls' start values ``amount``, ``criterion``,
    ``steps``, the ``criteria`` offered (default: every registered one), ``max_steps``, ``background``; any other keyword
    (``lr``, ``rank_batches``, ``eval_every``, ``flops_lambda``, ``distill``, ``seed``, ...) goes to
    `recovery.prune_and_finetune` unchanged, so the widget fine-tunes exactly as the loop beside it.

    Shows the baseline at once (one validation pass).  Returns an ``ipywidgets.VBox`` whose
    ``controller`` attribute is the `RecoveryController` (``press()``, ``stop()``, ``wait()``, ``result``).
    See the module docstring for how Stop works (``background``).
    """
    return RecoveryController(model, train_loader, val_loader, **settings).widget
