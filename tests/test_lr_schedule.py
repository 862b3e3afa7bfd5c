from gradlab.config import Recipe, scale_recipe
from gradlab.train.lr_schedule import PaperSchedule


def test_paper_drops_at_32k_and_48k():
    s = PaperSchedule(Recipe(), depth=56)
    assert s.lr(0) == 0.1 and s.lr(31999) == 0.1
    assert abs(s.lr(32000) - 0.01) < 1e-12 and abs(s.lr(47999) - 0.01) < 1e-12
    assert abs(s.lr(48000) - 0.001) < 1e-12 and abs(s.lr(63999) - 0.001) < 1e-12


def test_110_layers_warm_up_at_001_until_error_below_80_percent_then_back_to_01():
    s = PaperSchedule(Recipe(), depth=110)
    assert s.warming and s.lr(0) == 0.01
    s.observe(200, 0.85)
    assert s.warming and s.lr(300) == 0.01
    s.observe(400, 0.79)
    assert not s.warming and s.warmup_exit_step == 400
    assert s.lr(401) == 0.1  # restored (the common port never restores it)
    assert abs(s.lr(32000) - 0.01) < 1e-12


def test_shallow_nets_do_not_warm_up():
    assert not PaperSchedule(Recipe(), depth=56).warming


def test_state_round_trip():
    s = PaperSchedule(Recipe(), depth=1202)
    s.observe(380, 0.5)
    t = PaperSchedule(Recipe(), depth=1202)
    t.load_state_dict(s.state_dict())
    assert t.warmup_exit_step == 380 and t.lr(500) == 0.1


def test_steps_override_scales_milestones():
    r = scale_recipe(Recipe(), 6400)
    assert r.steps == 6400 and r.milestones == (3200, 4800)
    assert r.eval_every == 40 and r.checkpoint_every == 400


def test_the_remedies_train_without_the_papers_warm_up():
    s = PaperSchedule(Recipe(), depth=110, warmup=False)
    assert not s.warming and s.lr(0) == Recipe().lr

