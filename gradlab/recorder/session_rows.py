"""What becomes of a Recorder's rows: where they go, how they are read back, how its run closes.

SessionRows holds one session's rows (layers, histograms, logged scalars): written to its
run directory through a RunWriter (made from ``run_dir``, or given) or, without one, kept
in memory. ReadBack, a base of the Recorder, is its public read side (flush, frame,
metrics, histograms, nonfinite, run_dir, ...); end_state judges how a run directory the
recorder owns is closed. Apart from gradlab.recorder.recorder, which holds when and what
is recorded, so that each file keeps one job.
"""

from __future__ import annotations

import pandas as pd

from gradlab import runs
from gradlab.callbacks import StopRun
from gradlab.errors import RecorderError
from gradlab.models.probe_points import ProbePoint
from gradlab.recorder import derive
from gradlab.recorder.targets import description
from gradlab.run_writer import RunWriter

__all__ = ["ReadBack", "SessionRows", "end_state"]


class SessionRows:
    """The rows and scalars of one recording session: written through ``writer`` (None:
    kept in memory) and read back from ``first_step`` on (a resumed run directory holds
    earlier ones). ``owns_writer``: the writer was made here from a folder, so its status
    and its closing are the recorder's."""

    def __init__(self, run_dir, *, name, config, resume, overwrite, callbacks, experiment=None):
        self.owns_writer = not isinstance(run_dir, RunWriter)
        if not self.owns_writer:
            if name is not None or config is not None or resume or overwrite or tuple(callbacks) or experiment:
                raise RecorderError("name, experiment, config, resume, overwrite and callbacks describe a run_dir "
                                    "folder; a RunWriter given as run_dir carries its own.")  # fmt: skip
            self.writer = run_dir
        else:
            self.writer = None if run_dir is None else RunWriter(
                run_dir, name=name, config=config, resume=resume, overwrite=overwrite, callbacks=callbacks,
                experiment=experiment)  # fmt: skip
        self.first_step = 0
        # rows kept in memory when there is no run directory to write them to
        self._layers: list[pd.DataFrame] = []
        self._hists: list[pd.DataFrame] = []
        self._frame_cache: pd.DataFrame | None = None
        self._logged: list[dict] = []

    def open(self, targets, info: dict, device) -> int:
        """Open the run directory for ``targets`` with the recorder's ``info``; return the
        session's first step (after the steps a resumed run directory holds)."""
        from gradlab.environment import describe

        w = self.writer
        self.first_step = w.open(description(w.name, targets), info, describe(device))
        if self.owns_writer:
            w.status(runs.RUNNING)
            w.started(resumed=w.resumed)
        return self.first_step

    def describe(self, targets) -> None:
        """Describe the model anew in the run directory (its depth order is now known)."""
        if self.writer is not None:
            self.writer.describe(description(self.writer.name, targets))

    def due(self) -> bool:
        """True when the run directory is due a write by the clock."""
        return self.writer is not None and self.writer.due()

    def add(self, new: pd.DataFrame, hist: pd.DataFrame | None) -> None:
        """Take a flush's new rows (and histograms): written, or kept in memory."""
        if hist is not None:
            self._hists.append(hist)
        if self.writer is not None:
            self.writer.add_layers(new)
            if self.writer.write() and self.owns_writer:
                self.writer.status(runs.RUNNING)
        elif len(new):
            self._layers.append(new)
            self._frame_cache = None

    def log(self, row: dict) -> None:
        """Keep one row of logged scalars (gradlab.run_writer.metrics_row)."""
        if self.writer is not None:
            self.writer.log(row)
        else:
            self._logged.append(row)

    def layers(self) -> pd.DataFrame:
        """Every layer row of this session, typed (a copy)."""
        if self.writer is not None:
            rows = self.writer.rows(runs.LAYERS, self.first_step)
            return derive.typed(rows) if rows is not None else derive.empty_frame()
        if self._frame_cache is None:  # concatenated once, until the next flush
            history = self._layers
            self._frame_cache = derive.empty_frame() if not history else (
                history[0] if len(history) == 1 else pd.concat(history, ignore_index=True))
            self._layers = [self._frame_cache] if history else []
        return self._frame_cache.copy()

    def metrics(self) -> pd.DataFrame:
        """Every logged row of this session: step, then the scalars by name."""
        if self.writer is not None:
            self.writer.write()
            rows = self.writer.rows(runs.METRICS, self.first_step)
            return rows if rows is not None else pd.DataFrame(columns=["step"])
        return pd.DataFrame(self._logged, columns=None if self._logged else ["step"])

    def histograms(self) -> pd.DataFrame:
        """Every histogram row of this session."""
        if not self._hists:
            return derive.empty_hist_frame()
        return pd.concat(self._hists, ignore_index=True)

    def close(self, error: BaseException | None, nonfinite: dict | None, note: str = "") -> str | None:
        """Close a run directory of the recorder's own as :func:`end_state` says (``note``:
        how it ended without stop()); the state written, or None for none closed here."""
        if self.writer is None or not self.owns_writer:
            return None
        state, message = end_state(error, nonfinite)
        message = f"{message} ({note})" if message and note else message or note
        self.writer.close(state, message=message, **({"nonfinite": nonfinite} if nonfinite else {}))
        return state


class ReadBack:
    """The Recorder's read side, a base of it: flush() drains the device buffer into its
    SessionRows (``self._rows``), frame(), metrics() and histograms() read them back from
    memory or from run_dir, and nonfinite, probe_points and param_names say what its
    instrument (``self._inst``) found. Uses the Recorder's ``_inst``, ``_checks``,
    ``_started`` and ``_rows``."""

    @property
    def run_dir(self):
        """The run directory written (a Path), or None."""
        return None if self._rows.writer is None else self._rows.writer.run_dir

    @property
    def run_name(self) -> str | None:
        """The run's label in reports (its run directory's ``name``), or None."""
        return None if self._rows.writer is None else self._rows.writer.name

    def flush(self) -> pd.DataFrame:
        """Copy the device buffer to the host (the only host sync); return the new rows, which
        go to the run directory (or, without one, to the history that :meth:`frame` returns)."""
        if not self._started:
            return derive.empty_frame()
        new, hist = self._inst.drain()
        self._checks.flushed(new)
        self._rows.add(new, hist)
        return new

    def frame(self) -> pd.DataFrame:
        """Every row recorded so far in this session (flushes first): step(int64), layer(str),
        index(int32), kind(str), stat(str), value(float64). With a run directory the rows are
        read back from it."""
        self.flush()
        return self._rows.layers()

    def metrics(self) -> pd.DataFrame:
        """Every row given to :meth:`log` (this session's): step, then the scalars by name."""
        return self._rows.metrics()

    def histograms(self) -> pd.DataFrame:
        """Gradient histograms (flushes first): step, layer, index, kind, bin, lower, upper
        (edges of |g|), count. Empty unless the recorder was made with histograms=True."""
        self.flush()
        return self._rows.histograms()

    @property
    def nonfinite(self) -> dict | None:
        """{"step", "layer", "what": "grad"|"activation"|"weight"} of the first non-finite
        value, as of the last flush; None if none was seen. Ordered by step, then weights
        before activations before gradients; among weights and activations the shallowest,
        among gradients the deepest (where backward produced it first)."""
        found = self._inst.nonfinite if self._inst is not None else None
        return None if found is None else dict(found)

    @property
    def probe_points(self) -> list[ProbePoint]:
        """The resolved probe points in depth order (write them into the run directory)."""
        self._require_started()
        return list(self._inst.targets.points)

    @property
    def param_names(self) -> list[str]:
        self._require_started()
        return [p.name for p in self._inst.targets.params]

    def _require_started(self) -> None:
        if self._inst is None:
            raise RecorderError("The Recorder is not started; use gradlab.watch(model) or Recorder(model).start().")


def end_state(error: BaseException | None, nonfinite: dict | None) -> tuple[str, str]:
    """(state, message) of a watched run: failed by ``error`` (interrupted for a
    KeyboardInterrupt); else diverged when a weight or an activation went non-finite (a
    non-finite gradient alone is what a GradScaler's skipped steps look like, so it is
    noted, not judged); else done."""
    if isinstance(error, StopRun):  # a finding (or another callback) stopped it on purpose
        return runs.INTERRUPTED, str(error)
    if error is not None:
        state = runs.INTERRUPTED if isinstance(error, KeyboardInterrupt) else runs.FAILED
        return state, f"{type(error).__name__}: {error}"
    if nonfinite and nonfinite["what"] != "grad":
        return runs.DIVERGED, f"{runs.diverged_note(nonfinite)}: the run diverged"
    return runs.DONE, ""
