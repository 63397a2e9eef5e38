"""The registry: names, aliases, published sizes and costs, overrides, the `models` table."""
from __future__ import annotations

import pytest
import torch

import splitattn
from splitattn.cli import main as cli_main
from splitattn.models import ALIASES, MODEL_SPECS, count_macs, count_params, get_model_spec

PUBLISHED = [(name, spec) for name, spec in MODEL_SPECS.items() if spec.published_params_m is not None]


def test_every_published_configuration_is_registered():
    expected = {
        "resnest50", "resnest101", "resnest200", "resnest269", "resnest14", "resnest26",
        *(f"resnest50_fast_{tag}" for tag in ("1s1x64d", "2s1x64d", "4s1x64d", "1s2x40d", "2s2x40d",
                                              "4s2x40d", "1s4x24d")),
        "resnest50_fast_0s1x64d", "resnet50d",
    }
    assert expected <= set(splitattn.list_models())
    for alias in ("resnest14d", "resnest26d", "resnest50d", "resnest101e", "resnest200e", "resnest269e",
                  "resnest50d_4s2x40d", "resnest50d_1s4x24d"):
        assert alias in ALIASES and alias in splitattn.list_models(include_aliases=True)
        assert get_model_spec(alias).timm_name == alias


def test_list_models_filters_by_pattern():
    fast = splitattn.list_models("resnest50_fast_*")
    assert len(fast) == 8 and all(name.startswith("resnest50_fast_") for name in fast)
    assert splitattn.list_models("nothing*") == []


@pytest.mark.parametrize("name,spec", PUBLISHED, ids=[n for n, _ in PUBLISHED])
def test_parameter_count_matches_publication(name, spec):
    params = count_params(splitattn.create_model(name)) / 1e6
    # Published counts are rounded to 0.1M; resnest50_fast_1s1x64d is listed as 26.3M for 26.22M,
    # the count of the official code (and timm's), which we reproduce exactly.
    assert abs(params - spec.published_params_m) < 0.1


@pytest.mark.parametrize("name", [n for n, s in MODEL_SPECS.items() if s.published_gmacs is not None])
def test_macs_within_two_percent_of_publication(name):
    spec = MODEL_SPECS[name]
    gmacs = count_macs(splitattn.create_model(name), spec.eval_config.input_size) / 1e9
    assert abs(gmacs - spec.published_gmacs) / spec.published_gmacs < 0.02


def test_mac_counter_counts_a_known_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, groups=1), torch.nn.Conv2d(8, 8, 3, stride=2,
                              padding=1, groups=4), torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10))
    expected = 32 * 32 * 8 * 27 + 16 * 16 * 8 * (9 * 2) + 8 * 16 * 16 * 10
    assert count_macs(net, 32) == expected


def test_eval_configs_follow_the_paper():
    sizes = {name: MODEL_SPECS[name].eval_config for name in ("resnest50", "resnest101", "resnest200", "resnest269")}
    assert [c.input_size for c in sizes.values()] == [224, 256, 320, 416]
    assert [c.interpolation for c in sizes.values()] == ["bilinear", "bilinear", "bicubic", "bicubic"]
    assert sizes["resnest50"].resize_size == 256 and sizes["resnest269"].resize_size == 475
    model = splitattn.create_model("resnest50d")
    assert model.eval_config is MODEL_SPECS["resnest50"].eval_config and model.model_name == "resnest50"


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="resnest50.*splitattn models"):
        splitattn.create_model("resnet50s")
    with pytest.raises(ValueError, match="Did you mean: resnest50_fast_2s2x40d"):
        splitattn.create_model("resnest50_fast_2s2x41d")


def test_overrides_and_official_argument_names():
    model = splitattn.create_model("resnest14", num_classes=7, in_chans=1, final_drop=0.2, dilated=True,
                                   norm_layer="groupnorm", last_gamma=False)
    assert model.fc.out_features == 7 and model.conv1[0].in_channels == 1
    assert model.drop_rate == 0.2 and model.output_stride == 8
    assert isinstance(model.bn1, torch.nn.GroupNorm)
    assert model.layer1[0].bn3.weight.abs().sum() > 0  # last_gamma=False: not zero-initialised
    assert splitattn.create_model("resnest14", dilation=2).output_stride == 16
    assert splitattn.create_model("resnest14").layer1[0].bn3.weight.abs().sum() == 0
    with pytest.raises(TypeError, match="unknown argument 'radixx'.*valid overrides"):
        splitattn.create_model("resnest14", radixx=2)
    with pytest.raises(ValueError, match="dilation must be 1, 2 or 4"):
        splitattn.create_model("resnest14", dilation=3)
    with pytest.raises(ValueError, match="Unknown norm_layer"):
        splitattn.create_model("resnest14", norm_layer="layernorm")


def test_models_command_prints_the_table(capsys):
    assert cli_main(["models", "resnest50*"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("resnest50 "))
    assert row.split()[1:4] == ["27.48", "5.37", "224"]
    assert "resnest50_fast_4s2x40d" in out and "resnest14 " not in out
    assert cli_main(["models", "nomatch*"]) == 1  # a run error: exit 2 is for usage errors
