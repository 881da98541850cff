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

# generous but bounded waits, in seconds (2 shared CPU cores)
SERVER_START_S, PAGE_LOAD_S, SETUP_CELLS_S, WIDGET_UPDATE_S, PRUNE_RUN_S = 90, 120, 300, 90, 240


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
def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            last = predicate()
        except (NoSuchElementException, StaleElementReferenceException) as err:
            last = f"{type(err).__name__}"
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


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

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
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
                    self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)


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

        try:
            wait_for(ready, SERVER_START_S, f"JupyterLab to answer on port {port}", interval=0.5)
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
        driver.set_script_timeout(30)
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
            notes.append("--- page text (tail) ---\n" + page_text(driver)[-1200:])
        with contextlib.suppress(Exception):
            console = [f"{e['level']}: {e['message']}" for e in driver.get_log("browser")
                       if e.get("level") in ("SEVERE", "WARNING")]
            notes.append("--- browser console (tail) ---\n" + "\n".join(console[-15:]))
        notes.append("--- JupyterLab log (tail) ---\n" + lab.log_tail())
        raise AssertionError(f"{err}\n\n" + "\n\n".join(notes)) from err


# JavaScript run in the page (JupyterLab exposes `window.jupyterapp` with --LabApp.expose_app_in_browser)
NOTEBOOK_STATE_JS = """
const app = window.jupyterapp, panel = app && app.shell.currentWidget;
if (!panel || !panel.context || !panel.sessionContext) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return {path: panel.context.path, ready: panel.context.isReady && panel.sessionContext.isReady,
        cells: panel.content.widgets.length, kernel: kernel ? kernel.status : null};
"""

RUN_CELLS_JS = """
const [path, setup, widget] = arguments;
const app = window.jupyterapp, panel = app.shell.currentWidget;
if (!panel || !panel.context || panel.context.path !== path) return {error: `the open tab is not ${path}`};
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
      const start = performance.now();
      const ok = await app.commands.execute('notebook:run-cell');
      state.seconds.push([i, Math.round((performance.now() - start) / 100) / 10]);
      const errors = cells[i].model.outputs.toJSON().filter(o => o.output_type === 'error');
      state.ran.push(i);
      if (ok === false || errors.length) {
        state.failed = {cell: i, source: source(cells[i]).slice(0, 400),
                        errors: errors.map(e => (e.traceback || []).join('\\n') || `${e.ename}: ${e.evalue}`)};
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


def open_and_run_widget(driver, lab: Lab, spec: dict, timeline: Timeline):
    """Open the notebook, run the cells its widget needs, return the widget cell (a WebElement)."""
    from selenium.webdriver.common.by import By

    driver.get(lab.page(spec["path"], workspace=f"browser-test-{secrets.token_hex(4)}"))
    wait_for(lambda: (s := driver.execute_script(NOTEBOOK_STATE_JS)) and s["path"] == spec["path"]
             and s["ready"] and s["cells"] > 0 and s["kernel"] == "idle" and s,
             PAGE_LOAD_S, f"{spec['path']} to open with an idle kernel")
    timeline("notebook open, kernel idle")
    plan = driver.execute_script(RUN_CELLS_JS, spec["path"], spec["setup"], spec["widget"])
    assert "error" not in plan, f"{spec['path']}: {plan['error']} (the cells were renamed? update NOTEBOOKS)"

    def finished():
        state = driver.execute_script("return window.__browserTest")
        return state if state["state"] != "running" else None

    try:
        state = wait_for(finished, SETUP_CELLS_S, f"cells {plan['cells']} of {spec['path']} to run", interval=0.5)
    except AssertionError:
        state = driver.execute_script("return window.__browserTest")
        raise AssertionError(f"cells {plan['cells']} of {spec['path']} did not finish in {SETUP_CELLS_S} s; "
                             f"ran {state['ran']}, still at cell {state['current']}") from None
    if state["state"] != "done":
        failed = state["failed"] or {}
        raise AssertionError(f"{spec['path']}: cell {failed.get('cell')} failed:\n{failed.get('source', '')}\n"
                             + strip_ansi("\n".join(failed.get("errors", [])) or failed.get("exception", "")))
    timeline(f"cells run (seconds per cell: {', '.join(f'[{i}] {t}' for i, t in state['seconds'])})")
    cell = driver.find_element(By.CSS_SELECTOR, "[data-browser-test='widget-cell']")
    wait_for(lambda: cell.find_elements(By.CSS_SELECTOR, ".jupyter-widgets .widget-slider"), WIDGET_UPDATE_S,
             "the widget to render (a .widget-slider in the widget cell's output)")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", cell)
    timeline("widget rendered")
    return cell


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


def press_key_on_slider(element, key: str) -> float:
    """Press `key` on the slider's handle (noUiSlider moves it by the widget's step); return the new value."""
    from selenium.webdriver.common.by import By

    before = slider_value(element)
    element.find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(key)
    changed = wait_for(lambda: [v for v in [slider_value(element)] if v != before], WIDGET_UPDATE_S,
                       f"the slider's readout to move from {before} after pressing a key on its handle")
    return changed[0]


def set_slider(element, target: float, max_presses: int = 60) -> float:
    """Move a slider to `target` with the arrow keys, one step per press."""
    from selenium.webdriver.common.keys import Keys

    value = slider_value(element)
    for _ in range(max_presses):
        if value == pytest.approx(target):
            return value
        value = press_key_on_slider(element, Keys.ARROW_LEFT if value > target else Keys.ARROW_RIGHT)
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
        cell = open_and_run_widget(browser, lab, NOTEBOOKS[nb], timeline)
        assert_no_broken_widgets(browser)
        summary = lambda: cell.find_element(By.CSS_SELECTOR, ".widget-html").text  # noqa: E731
        wait_for(lambda: image_digest(cell) and "amount" in summary(), WIDGET_UPDATE_S,
                 "the first drawing (chart + summary)")
        before_image, before_table = image_digest(cell), html_table(cell)
        screenshot(browser, f"{nb}_before")
        timeline("first drawing")

        amount = slider(cell, "amount")
        for _ in range(2):
            press_key_on_slider(amount, Keys.ARROW_RIGHT)                        # e.g. 0.50 -> 0.60
        shown = f"amount {slider_value(amount):.2f}"
        wait_for(lambda: shown in summary() and image_digest(cell) not in ("", before_image),
                 WIDGET_UPDATE_S, f"the summary ({shown!r}) and a new chart")
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
                 WIDGET_UPDATE_S, f"the summary and chart for the criterion {choice!r}")
        timeline(f"criterion {choice!r} drawn")
        assert_no_broken_widgets(browser)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", cell)
        screenshot(browser, f"{nb}_after")


def test_recovery_widget_in_the_browser(browser, lab):
    """Notebook 03: set the amount and the steps, press "Prune & fine-tune", see the plot and numbers update."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with explained(browser, lab, "03") as timeline:
        cell = open_and_run_widget(browser, lab, NOTEBOOKS["03"], timeline)
        assert_no_broken_widgets(browser)
        button = cell.find_element(By.XPATH, ".//button[contains(., 'Prune & fine-tune')]")

        def status() -> str:
            htmls = cell.find_elements(By.CSS_SELECTOR, ".widget-html")
            return next(h.text.strip() for h in htmls if not h.find_elements(By.CSS_SELECTOR, "table"))

        wait_for(lambda: image_digest(cell) and status() == "ready", WIDGET_UPDATE_S,
                 "the baseline plot and the 'ready' status")
        before_image, before = image_digest(cell), html_table(cell)
        assert before["FLOPs / image"][1] == "–" and before["val. accuracy"][1] == "–", before
        screenshot(browser, "03_before")
        timeline("baseline drawn")

        amount = slider(cell, "amount")
        amount_before = slider_value(amount)
        for _ in range(2):
            amount_after = press_key_on_slider(amount, Keys.ARROW_LEFT)             # e.g. 50% -> 40%
        steps = int(set_slider(slider(cell, "fine-tune steps"), 20))                # fewer steps: a shorter run
        assert button.is_enabled(), "the button is disabled before any run"
        button.click()
        wait_for(lambda: not button.is_enabled() or status().startswith("done"), WIDGET_UPDATE_S,
                 "the run to start (button disabled)")
        timeline("sliders moved, button pressed")

        def ended() -> str | None:
            text = status()
            return text if re.match(r"(done|stopped|error)", text) else None

        final = wait_for(ended, PRUNE_RUN_S, "'done: …' in the status")
        match = re.fullmatch(r"done: (\d+(?:\.\d+)?)% after (\d+) steps", final)
        assert match, f"the run did not end well: status {final!r}"
        assert int(match.group(2)) == steps, f"the steps slider ({steps}) did not reach the kernel: {final!r}"
        wait_for(button.is_enabled, WIDGET_UPDATE_S, "the button to be enabled again")
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
