"""--compile: recorded steps run eagerly, the others compiled; compile time reported apart."""

import warnings

import pytest

from gradlab import runs
from gradlab.config import load_preset, make_run_spec
from gradlab.train import train


@pytest.mark.slow
def test_compiled_run_records_eager_steps_and_reports_compile_time(tmp_path):
    # the default schedule records every step up to 100, then every 4th: steps 101-103 run compiled, 104 eagerly
    spec = make_run_spec("resnet8", load_preset("quick"), steps=105, compile_mode="default",
                         recipe={"eval_every": 35, "checkpoint_every": 105, "batch_size": 16, "record_every": 4})
    assert spec.compile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(spec, tmp_path, progress=False)
    assert result.state == runs.DONE
    assert not [w for w in caught if "recompil" in str(w.message).lower()]
    (run,) = runs.load(tmp_path)
    assert run.status["compile_s"] > 0
    recorded = sorted(set(run.layers["step"]))
    assert recorded[-2:] == [100, 104] and 101 not in recorded
    at_104 = run.layers[run.layers["step"] == 104]
    assert at_104["stat"].eq("act_mean").any() and at_104["stat"].eq("act_grad_norm").any()  # hooks ran
    assert run.metrics["images_per_s"].iloc[1:].gt(0).all()
