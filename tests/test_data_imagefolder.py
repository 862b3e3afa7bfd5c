"""ImageNet-format data: a tiny ImageFolder tree written with PIL, read by torchvision."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gradlab import data, runs
from gradlab.cli.main import cli
from gradlab.compare import plan
from gradlab.config import DataSpec, load_preset
from gradlab.errors import DataError
from gradlab.data.image_folders import FolderLoader, epoch_plan

CLASSES = ("cat", "dog", "eel")


def write_tree(root, train_per_class=6, val_per_class=2, size=(40, 48), ext="png"):
    """root/train/<class>/*.png and root/val/<class>/*.png; each image a flat colour that names its
    class (red, green or blue channel high) plus noise, so that the labels can be checked."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
                pixels[..., c] += 190
                Image.fromarray(pixels).save(folder / f"{i}.{ext}")
    return root


def spec(root, **kw):
    return DataSpec(name="imagefolder", data_dir=str(root), image_size=32, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("imagefolder"))


def test_loads_classes_and_labels_through_torchvision(tree):
    ds = data.load(spec(tree))
    assert ds.num_classes == 3 and ds.train.classes == list(CLASSES)
    assert len(ds.train_y) == 18 and len(ds.test_y) == 6 and ds.shape == (3, 32, 32)
    assert ds.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_batches_have_the_augmented_shape_and_the_right_labels(tree):
    ds = data.load(spec(tree))
    loader = FolderLoader(ds, 4, seed=0, device=torch.device("cpu"), workers=0)
    assert loader.steps_per_epoch == 4  # 18 // 4, the last incomplete batch dropped
    x, y = loader.batch(0)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    order, _ = epoch_plan(0, 0, 18)
    assert y.tolist() == ds.train_y[order[:4]].tolist()
    # each image's dominant colour channel is its class (normalisation keeps that order)
    assert x.mean(dim=(2, 3)).argmax(1).tolist() == y.tolist()
    (xb, yb), *rest = list(loader.eval_batches(*ds.eval_sets()["test"]))
    assert xb.shape == (4, 3, 32, 32) and sum(len(b[1]) for b in rest) == 2  # 6 test images, batches of 4
    assert yb.tolist() == [0, 0, 1, 1]


def test_batch_order_and_augmentation_are_a_function_of_seed_and_step(tree):
    ds = data.load(spec(tree))
    cpu = torch.device("cpu")
    straight = FolderLoader(ds, 4, seed=3, device=cpu, workers=0)
    first = [straight.batch(s) for s in range(6)]  # crosses into epoch 1 at step 4
    jumped = FolderLoader(ds, 4, seed=3, device=cpu, workers=1)  # a resumed run, with a worker process
    for step in (5, 2, 3):
        x, y = jumped.batch(step)
        assert torch.equal(y, first[step][1]) and torch.equal(x, first[step][0])
    other = FolderLoader(ds, 4, seed=4, device=cpu, workers=0).batch(0)
    assert not torch.equal(other[0], first[0][0])
    before = torch.get_rng_state()
    straight.batch(6)
    assert torch.equal(before, torch.get_rng_state())  # augmentation leaves the caller's RNG alone


def test_data_parallel_shards_make_up_the_single_process_batch(tree):
    ds = data.load(spec(tree))
    cpu = torch.device("cpu")
    whole = FolderLoader(ds, 4, seed=1, device=cpu, workers=0)
    shards = [FolderLoader(ds, 4, seed=1, device=cpu, workers=0, rank=r, world_size=2) for r in (0, 1)]
    for step in (0, 1, 5):
        x, y = whole.batch(step)
        parts = [s.batch(step) for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    images, labels = ds.eval_sets()["test"]
    halves = [images[sl] for sl in (slice(0, 3), slice(3, 6))]
    got = [yb for h in halves for _, yb in shards[0].eval_batches(h, None)]
    assert torch.cat(got).tolist() == labels.tolist()


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("no-val", "has no val/ folder"),
    ("no-classes", "is not an image folder"),
    ("classes-differ", "same class folders; not in both: fox"),
])  # fmt: skip
def test_bad_layouts_are_data_errors_naming_the_layout(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "no-val":
        (root / "train" / "cat").mkdir(parents=True)
    elif layout == "no-classes":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
    elif layout == "classes-differ":
        write_tree(root, 1, 1)
        (root / "val" / "fox").mkdir()
        Image.new("RGB", (8, 8)).save(root / "val" / "fox" / "0.png")
    with pytest.raises(DataError, match=message) as e:
        data.load(spec(root))
    if layout != "classes-differ":
        assert "train/<class>" in str(e.value)


def test_imagefolder_needs_a_data_dir_and_no_val_split(tree):
    with pytest.raises(DataError, match="needs --data-dir"):
        data.load(DataSpec(name="imagefolder"))
    with pytest.raises(DataError, match="val_split"):
        data.load(spec(tree, val_split=2))


def test_fig4_preset_plans_the_imagenet_nets(tree):
    preset = load_preset("imagenet_fig4")
    assert (preset.data.name, preset.recipe.batch_size, preset.recipe.steps) == ("imagefolder", 256, 600000)
    specs = plan(preset, preset.compare.depths, preset.compare.families, preset.compare.seeds,
                 steps=2, data={"data_dir": str(tree)}, recipe={"batch_size": 4})
    assert [s.model.name for s in specs] == ["plain18", "resnet18", "plain34", "resnet34"]
    assert {s.experiment for s in specs} == {"imagenet_fig4-imagefolder"}
    assert all(s.recipe.steps == 2 and s.recipe.batch_size == 4 for s in specs)


def test_cli_compare_trains_resnet18_on_a_tiny_tree_with_the_fig4_preset(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_LOADER_WORKERS", "1")
    out = CliRunner().invoke(cli, [
        "compare", "--preset", "imagenet_fig4", "--data-dir", str(tree), "--families", "resnet", "--depths", "18",
        "--steps", "2", "--batch-size", "4", "--image-size", "32", "--no-record", "--device", "cpu",
        "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--formats", "png",
    ])  # fmt: skip
    assert out.exit_code == 0, out.output
    run_dir = tmp_path / "runs" / "imagenet_fig4-imagefolder" / "resnet18-s0"
    assert json.loads((run_dir / runs.STATUS).read_text())["state"] == "done"
    record = json.loads((run_dir / runs.SPEC).read_text())
    assert record["data"]["shape"] == [3, 32, 32] and record["data"]["train_size"] == 18
    assert record["model"]["name"] == "resnet18"
    metrics = runs.read_run(run_dir).metrics
    assert metrics["step"].tolist() == [0, 1, 2] and metrics["test_err"].between(0, 1).all()
    assert (tmp_path / "report" / "report.md").exists()


def test_cli_compare_plans_all_four_fig4_runs_then_stops_on_a_bad_tree(tmp_path):
    """The whole Fig. 4 plan reaches training; a tree without val/ stops it with the layout."""
    (tmp_path / "data" / "train" / "cat").mkdir(parents=True)
    out = CliRunner().invoke(cli, ["compare", "--preset", "imagenet_fig4", "--data-dir", str(tmp_path / "data"),
                                   "--steps", "2", "--batch-size", "4", "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "compare: 4 runs (plain, resnet x depths 18, 34 x seeds 0)" in out.output
    assert "has no val/ folder" in out.output and "train/<class>" in out.output


def test_a_run_written_before_image_size_existed_is_still_the_same_run(tmp_path):
    """Adding DataSpec.image_size must not turn runs already on disk into 'different settings'."""
    from gradlab.config import make_run_spec
    from gradlab.train import train

    run_spec = make_run_spec("resnet8", load_preset("quick"), steps=2, recipe={"batch_size": 32, "record": False})
    first = train(run_spec, tmp_path, progress=False)
    record = json.loads((first.run_dir / runs.SPEC).read_text())
    del record["run"]["data"]["image_size"]  # as an older gradlab wrote it
    (first.run_dir / runs.SPEC).write_text(json.dumps(record))
    again = train(run_spec, tmp_path, progress=False)
    assert (again.state, again.message) == ("done", "already finished")
