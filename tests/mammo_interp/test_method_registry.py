"""The method registry: a method defined once, outside the package, reaches every table."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pandas as pd
import pytest

from mammo_interp import Attribution, factor, methods, saliency
from mammo_interp.methods import Method
from readme_blocks import python_block


def readme_method_module() -> str:
    """The Python API page's "Adding a method" example, as a user would save it (nothing else is edited)."""
    return python_block("### Adding a method", "docs/python-api.md")


@pytest.fixture()
def user_method(tmp_path, monkeypatch):
    """``gradient_norm`` registered from ``my_methods.py`` in a folder outside the package."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_methods.py").write_text(readme_method_module())
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("my_methods", None)  # each test imports (and so registers) it afresh
    import my_methods  # noqa: F401  (registers on import)
    yield methods.get("gradient_norm")
    methods.unregister("gradient_norm")
    sys.modules.pop("my_methods", None)


def _common(data, checkpoint, tmp_path) -> list[str]:
    return ["--data", str(data), "--checkpoint", str(checkpoint), "--image-size", "128", "80", "--no-progress",
            "--n-boot", "20", "--validation-fraction", "0.2", "--seed", "1", "--report-dir", str(tmp_path / "reports")]


def test_a_method_from_a_users_module_reaches_the_factor_and_per_view_tables(
        user_method, tiny_masses, tiny_checkpoint, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    common = _common(tiny_masses, tiny_checkpoint, tmp_path)
    factor.main(["--attribute", "mass", "--methods", "gradient_norm", "breast_prior", "--mapper-epochs", "1",
                 "--out", str(tmp_path / "runs"), "--figure-cases", "1", *common])
    table = pd.read_csv(tmp_path / "reports" / "mass_head.csv")
    assert list(table["method"]) == ["gradient norm", "breast prior"]
    assert table["IoU-hit@0.25"].str.match(r"[01]\.\d{3} \(").all()  # value (CI)

    saliency.main(["--evaluate", "--methods", "gradcam", "gradient_norm", "--max-exams", "3", "--figure-cases", "0",
                   *common])
    per_view = pd.read_csv(tmp_path / "reports" / "mass_localization.csv")
    assert "gradient norm per view, joint norm" in set(per_view["method"])
    identification = pd.read_csv(tmp_path / "reports" / "mass_view_identification.csv")
    assert "gradient norm peak, joint norm" in set(identification["method"])


@pytest.mark.slow
def test_a_method_from_a_users_module_reaches_the_method_checks_table(
        user_method, tiny_masses, tiny_checkpoint, tmp_path, monkeypatch, one_torch_thread):
    from analyses import method_checks

    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    method_checks.main(["--layers", "head", "--methods", "gradient_norm", "mean_channels", "--images", "2",
                        "--out", str(tmp_path / "runs"), *_common(tiny_masses, tiny_checkpoint, tmp_path)])
    checks = pd.read_csv(tmp_path / "reports" / "mass_head.csv")
    assert list(checks["method"]) == ["gradient norm", "mean of channels"]
    assert set(checks["randomization check"]) <= {"passes", "FAILS"}
    randomized = pd.read_csv(tmp_path / "reports" / "mass_head_randomization_long.csv")
    assert "gradient norm" in set(randomized["method"])


def test_the_users_method_is_in_help_and_choices(user_method, capsys):
    with pytest.raises(SystemExit):
        factor.main(["--help"])
    assert "gradient_norm: L2 norm of the layer gradient" in " ".join(capsys.readouterr().out.split())
    config = factor.FactorConfig(methods=("gradient_norm",))
    assert config.methods == ("gradient_norm",)


def test_unknown_and_unfit_methods_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        factor.main(["--methods", "factor", "nope"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--methods: unknown ['nope']; valid: factor, random_channels" in error
    with pytest.raises(ValueError, match="factor does not run per view"):
        saliency.SaliencyConfig(methods=("gradcam", "factor"))
    with pytest.raises(ValueError, match="must include gradcam"):
        saliency.SaliencyConfig(methods=("layercam",))
    with pytest.raises(ValueError, match="supervised_reference needs a supervised reference model"):
        methods.check(("supervised_reference",), has=("text", "mapper"))
    with pytest.raises(ValueError, match="method: factor needs a trained channel mapper"):
        Attribution(None, None, "factor")


def test_a_method_is_declared_in_exactly_one_way_and_names_are_unique():
    def maps(context, target, layer, *inputs):
        return inputs[0][:, 0]

    with pytest.raises(ValueError, match="exactly one of"):
        Method("two_ways", "two", "test", "", maps=maps, mask_maps=lambda masks: masks.float())
    with pytest.raises(ValueError, match="lower-case"):
        Method("Bad Name", "bad", "test", "", maps=maps)
    with pytest.raises(ValueError, match="only methods with maps= run per view"):
        Method("prior_per_view", "p", "test", "", mask_maps=lambda masks: masks.float(), per_view=True)
    with pytest.raises(ValueError, match="registered already"):
        methods.register(Method("gradcam", "mine", "test", "", maps=maps))
    assert methods.get("gradcam").label == "Grad-CAM"  # the built-in stays


def test_built_ins_keep_their_order_and_plug_ins_load_from_entry_points(monkeypatch, tmp_path):
    """Entry points of the ``mammo_interp.methods`` group load with the built-ins; a broken one says which."""
    (tmp_path / "plugin_methods.py").write_text(readme_method_module().replace("gradient_norm", "plugin_norm"))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint("norm", "plugin_methods", methods.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(methods, "entry_points", lambda group: found if group == methods.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(methods, "_REGISTRY", {})
    monkeypatch.setattr(methods, "_loaded", False)
    names = methods.available()
    assert names[:4] == ("factor", "random_channels", "mean_channels", "oracle_channel")
    assert names[-1] == "plugin_norm" and methods.get("plugin_norm").per_view
    found[:] = [EntryPoint("broken", "no_such_module_anywhere", methods.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(methods, "_REGISTRY", {})
    monkeypatch.setattr(methods, "_loaded", False)
    with pytest.raises(ImportError, match="plug-in 'broken' \\(no_such_module_anywhere\\) failed to load"):
        methods.available()
