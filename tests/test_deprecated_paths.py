"""Import paths that moved keep working for now, with a DeprecationWarning."""

import warnings

import pytest


def test_the_old_probes_path_still_works_with_a_deprecation_warning():
    import gradlab.probes
    import gradlab.recorder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gradlab.probes.watch is gradlab.recorder.watch
        assert gradlab.probes.Recorder is gradlab.recorder.Recorder
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "gradlab.recorder" in str(caught[0].message)
    with pytest.raises(AttributeError):
        gradlab.probes.nothing_here
