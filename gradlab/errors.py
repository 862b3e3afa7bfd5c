"""Errors a user can cause. The CLI prints them as one clear line and exits non-zero."""


class GradlabError(Exception):
    """Base class: the message must say what is wrong and what to do about it."""


class ModelError(GradlabError):
    """Unknown model name, impossible depth, bad model option."""


class DataError(GradlabError):
    """Unknown dataset, missing files, batch larger than the data."""


class ConfigError(GradlabError):
    """Bad preset, config file, unknown key or wrong type."""


class RunDirError(GradlabError):
    """A run directory that cannot be read, or would be overwritten."""


class DiskFullError(RunDirError):
    """A file could not be written for lack of space (or over a file-size limit); what was
    on disk before is intact."""


class RecorderError(GradlabError):
    """Misuse of the recorder, e.g. watching a model twice."""


class ReportError(GradlabError):
    """A report that cannot be built: no readable runs, bad output folder, bad option."""


class LauncherError(GradlabError):
    """A launcher that cannot run here, e.g. SLURM asked for where there is no sbatch."""


class RunLockedError(RunDirError):
    """Another live process is training this run."""


class RunInterrupted(GradlabError):
    """SIGINT/SIGTERM: a run stopped after a checkpoint and can be resumed, or a report
    stopped with its folder left whole (the old report or the new one)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # across processes (a pool's workers): with its exit code
        return type(self), (str(self), self.exit_code)
