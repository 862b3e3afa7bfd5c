"""gradlab: study gradient flow and degradation in plain and residual networks."""

from gradlab.errors import GradlabError

__version__ = "0.1.0"

__all__ = ["GradlabError", "__version__", "watch"]


def __getattr__(name):
    # `gradlab.watch` imports torch lazily so that `import gradlab` (and the
    # report side, which never touches torch) stays light.
    if name == "watch":
        from gradlab.recorder import watch

        return watch
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
