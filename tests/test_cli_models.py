"""`gradlab models`: the zoo table."""

from click.testing import CliRunner

from gradlab.cli.main import cli


def _rows(output: str) -> dict[str, list[str]]:
    lines = output.strip().splitlines()
    assert lines[0].split() == ["name", "arch", "family", "depth", "blocks", "params", "MACs"]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_lists_every_named_model():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["resnet20"] == ["resnet20", "cifar", "resnet", "20", "9", "0.27M", "41M"]
    assert rows["plain20"][2:] == ["plain", "20", "9", "0.27M", "41M"]
    assert rows["resnet1202"][3:6] == ["1202", "600", "19.4M"]
    assert rows["preresnet164"][3:6] == ["164", "54", "1.7M"]
    assert rows["resnet18"][3:] == ["18", "8", "11.7M", "1.8G"]
    assert rows["seedresnet2"][3:5] == ["6", "2"]
    assert rows["fixup56"][1:5] == ["cifar", "fixup", "56", "27"] and rows["nfresnet110"][2] == "nfresnet"
    assert len(rows) == 34 + 4 * 3  # the four remedies at depths 20, 56 and 110
    assert "3×224×224" in result.output


def test_arch_filter():
    result = CliRunner().invoke(cli, ["models", "--arch", "imagenet"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert list(rows) == [f"{f}{d}" for d in (18, 34, 50, 101, 152) for f in ("resnet", "plain")]
    assert rows["resnet50"][5] == "25.6M"
    assert set(r[1] for r in rows.values()) == {"imagenet"}


def test_family_is_the_old_name_of_arch_and_says_so():
    old = CliRunner().invoke(cli, ["models", "--family", "imagenet"])
    new = CliRunner().invoke(cli, ["models", "--arch", "imagenet"])
    assert old.exit_code == 0, old.output
    assert old.stderr == "note: `gradlab models --family` is now `--arch`\n" and new.stderr == ""
    assert old.stdout == new.stdout
    both = CliRunner().invoke(cli, ["models", "--family", "imagenet", "--arch", "cifar"])
    assert both.exit_code == 2 and "give --arch only" in both.output


def test_bad_arch_is_a_usage_error():
    result = CliRunner().invoke(cli, ["models", "--arch", "mnist"])
    assert result.exit_code == 2
    assert "cifar" in result.output and "imagenet" in result.output


def test_help():
    result = CliRunner().invoke(cli, ["models", "-h"])
    assert result.exit_code == 0 and "--arch" in result.output and "MACs" in result.output
    assert "--family" not in result.output  # the old name works but is not shown
