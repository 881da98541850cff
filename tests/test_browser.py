"""The widgets in a real browser: JupyterLab from this environment, driven by headless Chromium.

nbval runs every cell, but it cannot see a widget that renders as "A Jupyter widget could not be
displayed", nor a button that does nothing.  This test opens notebooks 02, 03 and 05 in JupyterLab,
runs only the cells their widget needs (found by their source text, not their position), then
moves the sliders, clicks, and checks in the page that the plot and the numbers changed.

- JupyterLab listens on 127.0.0.1 only, with a random token, a free port and temporary config,
  runtime, settings, workspace and checkpoint folders; autosave is off, and the test checks that
  notebooks/ is unchanged at the end (same names, same bytes).
- The browser is Debian's ``chromium`` + ``chromium-driver`` driven by Selenium with an explicit
  driver path, so Selenium Manager never downloads anything (``SE_OFFLINE`` is set as well).
- Where no Chromium is installed the test skips, saying why; with ``PRUNING_BROWSER_TEST=require``
  (``.ci/run`` sets it once it has Chromium) a missing browser is a failure instead, and
  ``PRUNING_BROWSER_TEST=skip`` skips it on purpose.
- Screenshots go to ``build/browser_NN_before.png`` / ``_after.png`` (``_failure.png`` on failure).
- The notebook is found by its path among JupyterLab's open documents and activated by its id; its cells run
  through ``notebook:run-cell`` aimed at that notebook.  JupyterLab's "current widget" is not used: it follows
  the page's focus (a DOM ``focus`` event inside the notebook), which a browser may never deliver.
- No verdict depends on the machine's speed: every wait is a hang bound that fails only when nothing it watches
  (the page's state, the kernel, the widget) has changed for minutes, and then says what it saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from pruning_lib.course.paths import REPO_ROOT, build_dir

pytestmark = pytest.mark.slow

# Debian's packages `chromium` and `chromium-driver` (the same version); else whatever is on PATH by these names
CHROMIUM, CHROMEDRIVER = ("/usr/bin/chromium", "chromium"), ("/usr/bin/chromedriver", "chromedriver")
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-extensions", "--disable-sync", "--disable-translate", "--no-first-run",
    "--no-default-browser-check", "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--window-size=1400,1050",
)
# JupyterLab user settings written to the temporary settings folder
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},      # never write the notebooks
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # every cell stays in the DOM
}
BROKEN_WIDGET_TEXTS = ("A Jupyter widget could not be displayed", "Error displaying widget")

# What each widget needs, found by source text: the cells tagged "parameters" / "injected-parameters",
# the first code cell containing each `setup` string, then the one cell containing `widget`.
NOTEBOOKS = {
    "02": dict(path="notebooks/02_ranking_criteria.ipynb",
               setup=["from pruning_lib import", "experiment.load_baseline(", "criteria.rank_all(", "oracle.oracle(",
                      "oneshot.selection_scores("],
               widget="one_shot_widget("),
    "03": dict(path="notebooks/03_iterative_pruning.ipynb",
               setup=["from pruning_lib import", "experiment.load_baseline("],
               widget="recovery_widget("),
    "05": dict(path="notebooks/05_pruning_resnets.ipynb",
               setup=["from pruning_lib import", "criteria.rank_filters("],
               widget="one_shot_widget("),
}

# Hang bounds, not speed bounds (the slowest step seen takes 160 s on one shared core; nothing here times it):
# a wait fails when what it watches has not changed for QUIET_S, or for HANG_S while the kernel (or the widget's
# background run) is busy, e.g. in notebook 02's oracle cell.  PAGE_LOAD_S bounds `driver.get` (the load event),
# SERVER_S one request to JupyterLab, SCRIPT_S one script run in the page.
QUIET_S, HANG_S, PAGE_LOAD_S, SERVER_S, SCRIPT_S = 180, 20 * 60, 600, 60, 120
BUSY_KERNEL = ("busy", "starting", "restarting", "autorestarting")


# ---------------------------------------------------------------- availability
def _unavailable(reason: str) -> None:
    """Skip, or fail where the browser was promised (``PRUNING_BROWSER_TEST=require``, set by .ci/run)."""
    if os.environ.get("PRUNING_BROWSER_TEST", "").lower() == "require":
        pytest.fail(f"browser test required (PRUNING_BROWSER_TEST=require) but {reason}", pytrace=False)
    pytest.skip(f"browser test skipped: {reason}")


def _executable(path: str, name: str) -> str | None:
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else shutil.which(name)


@pytest.fixture(scope="module")
def chrome_paths() -> tuple[str, str]:
    if os.environ.get("PRUNING_BROWSER_TEST", "").lower() == "skip":
        pytest.skip("browser test skipped: PRUNING_BROWSER_TEST=skip")
    browser, driver = _executable(*CHROMIUM), _executable(*CHROMEDRIVER)
    if browser is None or driver is None:
        missing = " and ".join(p for p, found in ((CHROMIUM[0], browser), (CHROMEDRIVER[0], driver)) if not found)
        _unavailable(f"{missing} not found; install them with `apt-get install chromium chromium-driver` "
                     "(.ci/run does when it can)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("the selenium package is not installed; `pip install -e '.[dev]'`")
    return browser, driver


# ---------------------------------------------------------------- helpers
def wait_for(predicate: Callable[[], Any], what: str, *, page: Page | None = None,
             watch: Callable[[], Any] | None = None, busy: Callable[[Any], bool] | None = None,
             quiet_s: float = QUIET_S, interval: float = 0.25) -> Any:
    """Poll `predicate` until it returns something truthy, and return that.

    A hang bound, not a speed bound: it fails (naming `what`) only when neither the predicate's value nor the
    state of `page` (its notebook, kernel and cells: `Page.state`), or else what `watch()` returns, has changed
    for `quiet_s` seconds, or for HANG_S while `busy(state)` says work goes on (by default: the kernel is busy)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def watched() -> Any:
        try:
            return page.state() if page is not None else watch() if watch is not None else None
        except WebDriverException as err:
            return f"{type(err).__name__}: {first_line(err)}"

    busy = busy or kernel_busy
    start = changed = time.monotonic()
    last, seen, state = None, None, None
    while True:
        try:
            last = predicate()
        except (NoSuchElementException, StaleElementReferenceException) as err:
            last = f"{type(err).__name__}"
        else:
            if last:
                return last
        state = watched()
        now = time.monotonic()
        if (repr(last), state) != seen:
            seen, changed = (repr(last), state), now
        working = busy(state)
        limit = HANG_S if working else quiet_s
        if now - changed > limit:
            raise AssertionError(
                f"gave up waiting for {what}: nothing changed for {now - changed:.0f} s "
                f"({'while busy: ' + busy_text(state) if working else 'with nothing busy'}; "
                f"{now - start:.0f} s in all); last seen: {last!r}"
                + (f"\n--- the page ---\n{describe(state)}" if page is not None else ""))
        time.sleep(interval)


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def kernel_busy(state: Any) -> bool:
    panel = state.get("panel") if isinstance(state, dict) else None
    return bool(panel and panel.get("kernel") in BUSY_KERNEL)


def busy_text(state: Any) -> str:
    panel = (state.get("panel") if isinstance(state, dict) else None) or {}
    return f"the kernel is {panel.get('kernel')}" if panel.get("kernel") in BUSY_KERNEL else "the widget's run"


class Timeline:
    """When each step of a test ended, in seconds from the start (printed, and shown on failure)."""

    def __init__(self) -> None:
        self.start, self.marks = time.monotonic(), []

    def __call__(self, what: str) -> None:
        self.marks.append((what, time.monotonic() - self.start))

    def __str__(self) -> str:
        return "; ".join(f"{what} at {t:.1f} s" for what, t in self.marks)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def numbers(text: str) -> list[float]:
    """The numbers in a label, e.g. "25.3 MFLOPs (2.5× fewer)" -> [25.3, 2.5]."""
    return [float(x.replace(",", "")) for x in re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?", text)]


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, start time)} from /proc (Linux); empty elsewhere."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), fields[19])
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of the processes below `pid` (the kernels the server started)."""
    table, found, todo = _process_table(), {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


# ---------------------------------------------------------------- JupyterLab
@dataclass
class Lab:
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str, timeout: float = SERVER_S) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page(self, path: str, workspace: str) -> str:
        """The URL opening `path` in a workspace of its own (no tabs restored from an earlier test)."""
        return f"{self.url}/lab/workspaces/{workspace}/tree/{path}?token={self.token}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no JupyterLab log: {err})"

    def delete_sessions(self) -> None:
        """Shut the notebooks' kernels down (the browser closing does not)."""
        with contextlib.suppress(OSError, ValueError):
            for session in self.api("GET", "/api/sessions"):
                with contextlib.suppress(OSError, ValueError):
                    self.api("DELETE", f"/api/sessions/{session['id']}")


def _write_lab_settings(folder: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(chrome_paths, tmp_path_factory) -> Lab:
    """JupyterLab on 127.0.0.1 with a random token, rooted at the repository; stopped at the end."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    folders = {name: tmp / name for name in ("config", "runtime", "settings", "workspaces", "ipython", "checkpoints")}
    for folder in folders.values():
        folder.mkdir()
    _write_lab_settings(folders["settings"])
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folders["config"]), "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
           "JUPYTERLAB_SETTINGS_DIR": str(folders["settings"]),
           "JUPYTERLAB_WORKSPACES_DIR": str(folders["workspaces"]), "IPYTHONDIR": str(folders["ipython"]),
           "JUPYTER_PREFER_ENV_PATH": "1",   # this environment's `python3` kernelspec before any user one
           "PRUNING_PROFILE": "quick",
           # one torch thread: with 2 threads on 2 shared cores, any other busy process (Chromium, a second
           # test run) slows the oracle cell of notebook 02 up to ten-fold (5 s -> 40-130 s); with one, ~1.5x
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)           # the kernel must use the inline backend for figures to show
    token, port = secrets.token_hex(24), _free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={REPO_ROOT}", "--LabApp.expose_app_in_browser=True",
               f"--FileCheckpoints.checkpoint_dir={folders['checkpoints']}",   # no notebooks/.ipynb_checkpoints
               # a safety net should this process be killed before its teardown: idle kernels are culled and
               # the server stops itself after 15 minutes without kernels or requests
               "--MappingKernelManager.cull_idle_timeout=600", "--MappingKernelManager.cull_interval=60",
               "--ServerApp.shutdown_no_activity_timeout=900",
               "--LabApp.extension_manager=readonly", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, process, log)
    try:
        def ready():
            if process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with code {process.returncode}")
            with contextlib.suppress(OSError, ValueError):
                return server.api("GET", "/api/status", timeout=2) is not None
            return False

        try:          # progress: its log grows while it starts
            wait_for(ready, f"JupyterLab to answer on port {port}", watch=lambda: log.stat().st_size, interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- JupyterLab log (tail) ---\n{server.log_tail()}") from None
        spec = server.api("GET", "/api/kernelspecs")["kernelspecs"].get("python3", {}).get("spec", {})
        assert spec.get("argv") and Path(spec["argv"][0]).absolute().is_relative_to(sys.prefix), (
            f"the python3 kernel runs {spec.get('argv')}, not this environment's Python ({sys.prefix}); "
            "run `make setup` (it installs the kernelspec into .venv)")
        autosave = server.api("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")["settings"]
        assert autosave.get("autosave") is False, f"the autosave override was not applied: {autosave}"
        yield server
    finally:
        server.delete_sessions()
        kernels = _descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)      # the server shuts its kernels down on SIGTERM
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        alive = _process_table()
        for pid, start in kernels.items():            # what the server left behind (same pid *and* start time)
            if pid in alive and alive[pid][1] == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def notebooks_on_disk() -> dict[str, str]:
    """The names in notebooks/ and, for the notebooks under test, a hash of their bytes."""
    tested = {spec["path"] for spec in NOTEBOOKS.values()}
    return {str(p.relative_to(REPO_ROOT)): sha256(p) if str(p.relative_to(REPO_ROOT)) in tested else "present"
            for p in sorted((REPO_ROOT / "notebooks").iterdir())}


@pytest.fixture()
def notebooks_unchanged():
    """Checks, after the browser has quit, that notebooks/ is as it was before the test."""
    before = notebooks_on_disk()
    yield
    after = notebooks_on_disk()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, (f"{changed} changed in notebooks/ during the browser test: JupyterLab wrote there "
                         "(autosave and checkpoints should be off), or someone regenerated a notebook meanwhile. "
                         "Check `git status` / `git diff` before committing.")


# ---------------------------------------------------------------- the browser
@pytest.fixture()
def browser(chrome_paths, lab, notebooks_unchanged, tmp_path):
    """A fresh headless Chromium per test (no "leave page?" prompts between notebooks); quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chrome_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    old = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"        # belt and braces: the explicit driver path already skips it
    try:
        service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except Exception as err:  # noqa: BLE001 - report whatever chromedriver says
            _unavailable(f"Chromium did not start ({type(err).__name__}: {str(err).strip()[:500]})")
        driver.set_page_load_timeout(PAGE_LOAD_S)
        driver.set_script_timeout(SCRIPT_S)
        try:
            yield driver
        finally:
            with contextlib.suppress(Exception):
                driver.quit()
            lab.delete_sessions()   # stop this notebook's kernel so the next one has the CPU
    finally:
        if old is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old


def page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


@contextlib.contextmanager
def explained(driver, lab: Lab, name: str):
    """Yields a `Timeline`.  On failure: a screenshot, the steps done, the page's visible text tail,
    browser console errors and the JupyterLab log."""
    timeline = Timeline()
    shot = build_dir() / f"browser_{name}_failure.png"
    shot.unlink(missing_ok=True)     # from an earlier failed run
    try:
        yield timeline
        print(f"browser test {name}: {timeline}")
    except Exception as err:
        notes = [f"steps done: {timeline}"]
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
            notes.append(f"screenshot: {shot}")
        with contextlib.suppress(Exception):
            widget_cell = driver.execute_script(
                "const c = document.querySelector(\"[data-browser-test='widget-cell']\"); return c && c.innerText")
            if widget_cell:
                notes.append("--- the widget cell's text ---\n" + widget_cell[-2000:])
        with contextlib.suppress(Exception):
            notes.append("--- the page ---\n" + describe(Page(driver, NOTEBOOKS[name]["path"]).state()))
        with contextlib.suppress(Exception):
            notes.append("--- page text (tail) ---\n" + page_text(driver)[-1200:])
        with contextlib.suppress(Exception):
            console = [f"{e['level']}: {e['message']}" for e in driver.get_log("browser")
                       if e.get("level") in ("SEVERE", "WARNING")]
            notes.append("--- browser console (tail) ---\n" + "\n".join(console[-15:]))
        notes.append("--- JupyterLab log (tail) ---\n" + lab.log_tail())
        raise AssertionError(f"{err}\n\n" + "\n\n".join(notes)) from err


# JavaScript run in the page (JupyterLab exposes `window.jupyterapp` with --LabApp.expose_app_in_browser).
# The notebook is looked up by its path among the main area's widgets, never as `app.shell.currentWidget`:
# that is JupyterLab's focus tracker's widget, set only when a DOM `focus` event reaches a widget in the main area.
FIND_PANEL_JS = """
const findPanel = (app, path) => Array.from(app.shell.widgets('main'))
  .find(w => w.context && w.context.path === path && w.sessionContext && w.content && w.content.widgets);
"""

PAGE_STATE_JS = FIND_PANEL_JS + """
const [path] = arguments, app = window.jupyterapp;
if (!app) return {app: false, document: document.readyState};
const name = w => w ? (w.context ? w.context.path : `${w.title.label || w.id} (${w.constructor.name})`) : null;
const panel = findPanel(app, path), current = app.shell.currentWidget, element = document.activeElement;
const state = {app: true, open: Array.from(app.shell.widgets('main')).map(name), current: name(current),
               focus: {page: document.hasFocus(),
                       element: element ? `${element.tagName.toLowerCase()}.${element.className}`.slice(0, 60) : null,
                       inNotebook: !!(panel && element && panel.node.contains(element))},
               panel: null};
if (panel) {
  const session = panel.sessionContext, kernel = session.session && session.session.kernel;
  state.panel = {id: panel.id, contextReady: panel.context.isReady, sessionReady: session.isReady,
                 cells: panel.content.widgets.length, kernel: kernel ? kernel.status : null,
                 kernelName: kernel ? kernel.name : null, shown: panel.isVisible, current: current === panel};
  const run = window.__browserTest;
  if (run) {
    const cell = run.current === null ? null : panel.content.widgets[run.current];
    state.run = {state: run.state, ran: run.ran.slice(), current: run.current,
                 outputs: cell && cell.model.outputs ? cell.model.outputs.length : null};
  }
}
return state;
"""

RUN_CELLS_JS = FIND_PANEL_JS + """
const [path, setup, widget] = arguments;
const app = window.jupyterapp, panel = findPanel(app, path);
if (!panel) return {error: `${path} is not open in JupyterLab's main area`};
app.shell.activateById(panel.id);        // shown, whatever the focus tracker says
const cells = panel.content.widgets, source = c => c.model.sharedModel.getSource();
const code = cells.map((c, i) => [c, i]).filter(([c]) => c.model.type === 'code');
const tags = c => c.model.getMetadata('tags') || [];
const order = code.filter(([c]) => tags(c).some(t => t === 'parameters' || t === 'injected-parameters'))
                  .map(([, i]) => i);
const missing = [];
for (const text of setup) {
  const hit = code.find(([c]) => source(c).includes(text));
  if (hit) order.push(hit[1]); else missing.push(text);
}
const widgetHits = code.filter(([c]) => source(c).includes(widget)).map(([, i]) => i);
if (widgetHits.length !== 1) missing.push(`${widget} (in ${widgetHits.length} code cells, expected 1)`);
if (missing.length) return {error: `no code cell contains: ${missing.join('; ')}`};
const widgetIndex = widgetHits[0];
const todo = [...new Set(order)].filter(i => i < widgetIndex).sort((a, b) => a - b).concat([widgetIndex]);
cells[widgetIndex].node.setAttribute('data-browser-test', 'widget-cell');
app.shell.collapseLeft();
const state = window.__browserTest = {state: 'running', cells: todo, ran: [], seconds: [], current: null, failed: null};
(async () => {
  try {
    for (const i of todo) {
      state.current = i;
      panel.content.deselectAll();
      panel.content.activeCellIndex = i;
      cells[i].model.executionCount = null;            // a number again only if this run executes it
      const start = performance.now();
      // aimed at this notebook (`widgetId`), not at the notebook tracker's current one
      const ok = await app.commands.execute('notebook:run-cell', {widgetId: panel.id, activate: false});
      state.seconds.push([i, Math.round((performance.now() - start) / 100) / 10]);
      const errors = cells[i].model.outputs.toJSON().filter(o => o.output_type === 'error');
      state.ran.push(i);
      if (ok === false || errors.length || cells[i].model.executionCount === null) {
        state.failed = {cell: i, source: source(cells[i]).slice(0, 400),
                        errors: errors.map(e => (e.traceback || []).join('\\n') || `${e.ename}: ${e.evalue}`)};
        if (!errors.length && cells[i].model.executionCount === null)
          state.failed.errors.push(`notebook:run-cell returned ${ok} but did not execute cell ${i} of ${path}`);
        state.state = 'failed';
        return;
      }
    }
    state.state = 'done';
  } catch (e) {
    state.failed = {exception: String((e && e.stack) || e)};
    state.state = 'failed';
  }
})();
return {cells: todo, widget: widgetIndex};
"""


@dataclass
class Page:
    """The JupyterLab page with one notebook, `path`, as this test sees it."""
    driver: Any
    path: str

    def state(self) -> dict | str:
        """What the page shows: the open documents, JupyterLab's current widget, the focus, and the notebook's
        panel (context and session ready, cells, kernel status) with the cells run so far."""
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.execute_script(PAGE_STATE_JS, self.path)
        except WebDriverException as err:
            return f"{type(err).__name__}: {first_line(err)}"


def describe(state: Any) -> str:
    """A page state (`Page.state`) in words, for a failure message."""
    if not isinstance(state, dict):
        return f"no state from the page: {state!r}"
    if not state.get("app"):
        return f"JupyterLab's app is not in the page yet (document {state.get('document')})"
    focus = state["focus"]
    lines = [f"open in the main area: {state['open'] or 'nothing'}",
             (f"JupyterLab's current widget (it follows the focus): {state['current']}; the page "
              f"{'has' if focus['page'] else 'does not have'} the focus, on {focus['element']}")]
    panel = state.get("panel")
    if panel is None:
        lines.append("the notebook is not open")
    else:
        lines.append(f"the notebook: context {'ready' if panel['contextReady'] else 'not ready'}, session "
                     f"{'ready' if panel['sessionReady'] else 'not ready'}, {panel['cells']} cells, kernel "
                     f"{panel['kernelName']} {panel['kernel']}, {'shown' if panel['shown'] else 'hidden'}")
    if state.get("run"):
        run = state["run"]
        lines.append(f"cells run: {run['ran']}; at cell {run['current']} ({run['outputs']} outputs so far): "
                     f"{run['state']}")
    return "\n".join(lines)


def notebook_ready(state: Any) -> dict | None:
    panel = state.get("panel") if isinstance(state, dict) else None
    ready = panel and panel["contextReady"] and panel["sessionReady"] and panel["cells"] and panel["kernel"] == "idle"
    return state if ready else None


def open_and_run_widget(driver, lab: Lab, spec: dict, timeline: Timeline) -> tuple[Any, Page]:
    """Open the notebook, run the cells its widget needs; return the widget cell (a WebElement) and the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    page = Page(driver, spec["path"])
    try:
        driver.get(lab.page(spec["path"], workspace=f"browser-test-{secrets.token_hex(4)}"))
    except TimeoutException:
        raise AssertionError(f"the page of {spec['path']} did not finish loading (its load event) in {PAGE_LOAD_S} s"
                             f"\n--- the page ---\n{describe(page.state())}") from None
    state = wait_for(lambda: notebook_ready(page.state()), f"{spec['path']} to open with an idle kernel", page=page)
    current = state["current"]
    timeline("notebook open, kernel idle" + ("" if state["panel"]["current"] else
             f" (JupyterLab's current widget is {current}, not the notebook: the page's focus "
             f"{'never reached it' if current is None else 'is elsewhere'}; the notebook is used by its path)"))
    plan = driver.execute_script(RUN_CELLS_JS, spec["path"], spec["setup"], spec["widget"])
    assert "error" not in plan, f"{spec['path']}: {plan['error']} (the cells were renamed? update NOTEBOOKS)"

    def finished():
        state = driver.execute_script("return window.__browserTest")
        return state if state["state"] != "running" else None

    state = wait_for(finished, f"cells {plan['cells']} of {spec['path']} to run", page=page, interval=0.5)
    if state["state"] != "done":
        failed = state["failed"] or {}
        raise AssertionError(f"{spec['path']}: cell {failed.get('cell')} failed:\n{failed.get('source', '')}\n"
                             + strip_ansi("\n".join(failed.get("errors", [])) or failed.get("exception", "")))
    timeline(f"cells run (seconds per cell: {', '.join(f'[{i}] {t}' for i, t in state['seconds'])})")
    cell = driver.find_element(By.CSS_SELECTOR, "[data-browser-test='widget-cell']")
    wait_for(lambda: cell.find_elements(By.CSS_SELECTOR, ".jupyter-widgets .widget-slider"),
             "the widget to render (a .widget-slider in the widget cell's output)", page=page)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", cell)
    timeline("widget rendered")
    return cell, page


def assert_no_broken_widgets(driver) -> None:
    text = page_text(driver)
    for broken in BROKEN_WIDGET_TEXTS:
        assert broken not in text, f"the page shows {broken!r}"


def slider(cell, label: str):
    """The ipywidgets slider whose description is `label`."""
    from selenium.webdriver.common.by import By

    for element in cell.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        if element.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == label:
            return element
    raise AssertionError(f"no slider labelled {label!r} in the widget")


def slider_value(element) -> float:
    """The number a slider's readout shows: "40%" -> 0.4, "0.60" -> 0.6, "20" -> 20."""
    from selenium.webdriver.common.by import By

    text = element.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip()
    value = numbers(text)
    assert len(value) == 1, f"the slider's readout {text!r} is not one number"
    return value[0] / 100 if text.endswith("%") else value[0]


def press_key_on_slider(element, key: str, page: Page) -> float:
    """Press `key` on the slider's handle (noUiSlider moves it by the widget's step); return the new value."""
    from selenium.webdriver.common.by import By

    before = slider_value(element)
    element.find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(key)
    changed = wait_for(lambda: [v for v in [slider_value(element)] if v != before],
                       f"the slider's readout to move from {before} after pressing a key on its handle", page=page)
    return changed[0]


def set_slider(element, target: float, page: Page, max_presses: int = 60) -> float:
    """Move a slider to `target` with the arrow keys, one step per press."""
    from selenium.webdriver.common.keys import Keys

    value = slider_value(element)
    for _ in range(max_presses):
        if value == pytest.approx(target):
            return value
        value = press_key_on_slider(element, Keys.ARROW_LEFT if value > target else Keys.ARROW_RIGHT, page)
    raise AssertionError(f"the slider is at {value} after {max_presses} key presses, not at {target}")


def image_digest(cell) -> str:
    """A hash of the widget's plot: the src (a data: URL) of the last <img> in its outputs."""
    from selenium.webdriver.common.by import By

    images = cell.find_elements(By.CSS_SELECTOR, ".widget-output img")
    src = images[-1].get_attribute("src") if images else ""
    return hashlib.sha256(src.encode()).hexdigest() if src.startswith("data:image/") else ""


def html_table(cell) -> dict[str, list[str]]:
    """The widget's HTML table as {first column: [other columns]}."""
    from selenium.webdriver.common.by import By

    rows = {}
    for tr in cell.find_elements(By.CSS_SELECTOR, ".widget-html table tr"):
        texts = [td.text.strip() for td in tr.find_elements(By.CSS_SELECTOR, "td")]
        if texts:
            rows[texts[0]] = texts[1:]
    return rows


def screenshot(driver, name: str) -> Path:
    path = build_dir() / f"browser_{name}.png"
    driver.save_screenshot(str(path))
    return path


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("nb", ["02", "05"])
def test_one_shot_widget_in_the_browser(browser, lab, nb):
    """Notebooks 02 (VGG filters) and 05 (ResNet channel groups): the amount slider and the criterion dropdown
    redraw the numbers and the bar chart."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    with explained(browser, lab, nb) as timeline:
        cell, page = open_and_run_widget(browser, lab, NOTEBOOKS[nb], timeline)
        assert_no_broken_widgets(browser)
        summary = lambda: cell.find_element(By.CSS_SELECTOR, ".widget-html").text  # noqa: E731
        wait_for(lambda: image_digest(cell) and "amount" in summary(), "the first drawing (chart + summary)", page=page)
        before_image, before_table = image_digest(cell), html_table(cell)
        screenshot(browser, f"{nb}_before")
        timeline("first drawing")

        amount = slider(cell, "amount")
        for _ in range(2):
            press_key_on_slider(amount, Keys.ARROW_RIGHT, page)                  # e.g. 0.50 -> 0.60
        shown = f"amount {slider_value(amount):.2f}"
        wait_for(lambda: shown in summary() and image_digest(cell) not in ("", before_image),
                 f"the summary ({shown!r}) and a new chart", page=page)
        timeline(f"{shown} drawn")
        after_table = html_table(cell)
        removed_before = numbers(before_table["filters removed"][0])   # "352 of 704"
        removed_after = numbers(after_table["filters removed"][0])
        assert removed_after[1] == removed_before[1] and removed_after[0] > removed_before[0], (
            before_table["filters removed"], after_table["filters removed"])
        accuracy = numbers(after_table["one-shot accuracy"][0])        # "45.6%"
        assert len(accuracy) == 1 and 0 <= accuracy[0] <= 100, after_table["one-shot accuracy"]
        mflops_before, mflops_after = (numbers(t["MFLOPs per image"][0])[0] for t in (before_table, after_table))
        assert 0 < mflops_after < mflops_before, (before_table["MFLOPs per image"], after_table["MFLOPs per image"])

        slider_image = image_digest(cell)
        dropdown = Select(cell.find_element(By.CSS_SELECTOR, ".widget-dropdown select"))
        current, options = dropdown.first_selected_option.text, [o.text for o in dropdown.options]
        choice = "random" if "random" in options and current != "random" else next(o for o in options if o != current)
        dropdown.select_by_visible_text(choice)
        wait_for(lambda: summary().startswith(choice) and image_digest(cell) not in ("", slider_image),
                 f"the summary and chart for the criterion {choice!r}", page=page)
        timeline(f"criterion {choice!r} drawn")
        assert_no_broken_widgets(browser)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", cell)
        screenshot(browser, f"{nb}_after")


def test_recovery_widget_in_the_browser(browser, lab):
    """Notebook 03: set the amount and the steps, press "Prune & fine-tune", see the plot and numbers update."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with explained(browser, lab, "03") as timeline:
        cell, page = open_and_run_widget(browser, lab, NOTEBOOKS["03"], timeline)
        assert_no_broken_widgets(browser)
        button = cell.find_element(By.XPATH, ".//button[contains(., 'Prune & fine-tune')]")

        def status() -> str:
            htmls = cell.find_elements(By.CSS_SELECTOR, ".widget-html")
            return next(h.text.strip() for h in htmls if not h.find_elements(By.CSS_SELECTOR, "table"))

        wait_for(lambda: image_digest(cell) and status() == "ready", "the baseline plot and the 'ready' status",
                 page=page)
        before_image, before = image_digest(cell), html_table(cell)
        assert before["FLOPs / image"][1] == "–" and before["val. accuracy"][1] == "–", before
        screenshot(browser, "03_before")
        timeline("baseline drawn")

        amount = slider(cell, "amount")
        amount_before = slider_value(amount)
        for _ in range(2):
            amount_after = press_key_on_slider(amount, Keys.ARROW_LEFT, page)       # e.g. 50% -> 40%
        steps = int(set_slider(slider(cell, "fine-tune steps"), 20, page))          # fewer steps: a shorter run
        assert button.is_enabled(), "the button is disabled before any run"
        button.click()
        wait_for(lambda: not button.is_enabled() or status().startswith("done"), "the run to start (button disabled)",
                 page=page)
        timeline("sliders moved, button pressed")

        def ended() -> str | None:
            text = status()
            return text if re.match(r"(done|stopped|error)", text) else None

        def progress() -> dict:       # the run is in a thread of the kernel: its status and progress bar move
            bars = cell.find_elements(By.CSS_SELECTOR, ".widget-progress .progress-bar")
            return {"page": page.state(), "status": status(),
                    "progress": bars[0].get_attribute("style") if bars else None, "running": not button.is_enabled()}

        final = wait_for(ended, "'done: …' in the status", watch=progress,
                         busy=lambda seen: isinstance(seen, dict) and (kernel_busy(seen["page"]) or seen["running"]))
        match = re.fullmatch(r"done: (\d+(?:\.\d+)?)% after (\d+) steps", final)
        assert match, f"the run did not end well: status {final!r}"
        assert int(match.group(2)) == steps, f"the steps slider ({steps}) did not reach the kernel: {final!r}"
        wait_for(button.is_enabled, "the button to be enabled again", page=page)
        timeline("prune & fine-tune done")

        after_image, after = image_digest(cell), html_table(cell)
        assert after_image and after_image != before_image, "the plot image did not change"
        assert {k: numbers(v[0]) for k, v in after.items()} == {k: numbers(v[0]) for k, v in before.items()}, (
            f"the 'before' column changed: {before} -> {after}")
        for row in ("FLOPs / image", "parameters"):
            assert 0 < numbers(after[row][1])[0] < numbers(after[row][0])[0], f"{row}: {after[row]}"
        accuracy = numbers(after["val. accuracy"][1])                               # "61.2% → 84.0%"
        assert len(accuracy) == 2 and all(0 <= a <= 100 for a in accuracy), after["val. accuracy"]
        assert accuracy[1] == pytest.approx(float(match.group(1)), abs=0.051), (after["val. accuracy"], final)
        filters_before, filters_after = numbers(after["conv filters"][0])[0], numbers(after["conv filters"][1])[0]
        removed = 1 - filters_after / filters_before
        assert abs(removed - amount_after) < abs(removed - amount_before), (
            f"{removed:.1%} of the filters were removed: the amount slider ({amount_after:.0%}, moved from "
            f"{amount_before:.0%}) did not reach the kernel")
        assert_no_broken_widgets(browser)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", cell)
        screenshot(browser, "03_after")
