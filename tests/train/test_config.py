import pytest

from selfsup.errors import SelfsupError
from selfsup.methods.simclr import SimCLRConfig
from selfsup.train.config import TrainConfig, coerce, parse_assignments, read_yaml, split_options


def test_assignments_are_read_as_yaml_values():
    assert parse_assignments(["lr=0.1", "backbone=resnet50", "small_stem=true", "epochs=3"]) == \
        {"lr": 0.1, "backbone": "resnet50", "small_stem": True, "epochs": 3}
    with pytest.raises(SelfsupError, match="key=value"):
        parse_assignments(["lr"])


def test_coercion_follows_the_field_types():
    assert coerce(SimCLRConfig, "lr", 1) == 1.0 and isinstance(coerce(SimCLRConfig, "lr", 1), float)
    assert coerce(SimCLRConfig, "lr", parse_assignments(["lr=4e-3"])["lr"]) == 0.004  # YAML reads '4e-3' as a string
    assert coerce(TrainConfig, "max_steps", None) is None
    assert coerce(TrainConfig, "data", 7) == "7"
    assert coerce(SimCLRConfig, "backbone_kwargs", {"patch_size": 4}) == {"patch_size": 4}
    with pytest.raises(SelfsupError, match="expects dict"):
        coerce(SimCLRConfig, "backbone_kwargs", "patch_size=4")
    with pytest.raises(SelfsupError, match="option epochs expects int or null, got 'ten'"):
        coerce(TrainConfig, "epochs", "ten")
    with pytest.raises(SelfsupError, match="option lr expects float"):
        coerce(SimCLRConfig, "lr", "fast")
    with pytest.raises(SelfsupError, match="expects bool"):
        coerce(SimCLRConfig, "small_stem", "yes please")


def test_options_split_between_method_and_run():
    method, train = split_options({"temperature": 0.2, "batch_size": 64, "backbone": "resnet10t"}, SimCLRConfig)
    assert method == {"temperature": 0.2, "backbone": "resnet10t"} and train == {"batch_size": 64}
    with pytest.raises(SelfsupError, match="unknown option 'bogus'"):
        split_options({"bogus": 1}, SimCLRConfig)


def test_yaml_files_flat_or_as_saved_by_a_run(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("temperature: 0.1\nmax_steps: 5\n")
    assert read_yaml(str(flat)) == {"temperature": 0.1, "max_steps": 5}
    saved = tmp_path / "saved.yaml"
    saved.write_text("method: simclr\nversion: 0.1.0\ntrain: {max_steps: 5}\nmethod_config: {lr: 0.2}\n")
    assert read_yaml(str(saved)) == {"max_steps": 5, "lr": 0.2}
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(SelfsupError, match="not valid YAML"):
        read_yaml(str(broken))
    with pytest.raises(SelfsupError, match="does not exist"):
        read_yaml(str(tmp_path / "missing.yaml"))
