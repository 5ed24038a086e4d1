"""Config files: extends/merge order, --set, env variables, paths, clear validation errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sft_interaction_callback.training.config import (
    ConfigError,
    compose_paths,
    load_config,
    parse_value,
)
from sft_interaction_callback.training.plan import describe_plan


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture()
def tree(tmp_path):
    """base + model + data files and an experiment that extends all three."""
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    write(
        tmp_path / "base.yaml",
        """\
        lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
        data: {eval_size: 10, seed: 1}
        training:
          output_dir: runs/{name}
          learning_rate: 1e-4
          max_steps: 100
          report_to: none
        interactions: {n_players: 6, num_probes: 4}
        """,
    )
    write(tmp_path / "models" / "m.yaml", "model: {name: org/llama-like, family: llama}\n")
    write(tmp_path / "data" / "d.yaml", "data: {path: ../rows.jsonl}\ntraining: {max_steps: 50}\n")
    write(
        tmp_path / "experiments" / "exp.yaml",
        """\
        extends: [../base.yaml, ../models/m.yaml, ../data/d.yaml]
        lora: {r: 16}
        """,
    )
    return tmp_path


def test_extends_merges_in_order_and_records_origins(tree):
    cfg = load_config([tree / "experiments" / "exp.yaml"])
    assert cfg.name == "exp"
    assert cfg.lora.r == 16 and cfg.lora.alpha == 16  # mapping merged key by key
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.training["max_steps"] == 50  # data file overrides base
    assert cfg.training["learning_rate"] == pytest.approx(1e-4)  # 1e-4 is a float, not a str
    assert cfg.training["output_dir"] == "runs/exp"
    assert cfg.data.path == str((tree / "rows.jsonl").resolve())  # relative to its file
    assert cfg.origins["lora.r"].endswith("exp.yaml")
    assert cfg.origins["training.max_steps"].endswith("d.yaml")
    assert [Path(s).name for s in cfg.sources] == ["base.yaml", "m.yaml", "d.yaml", "exp.yaml"]
    assert cfg.interaction_kwargs() == {"n_players": 6, "num_probes": 4}
    assert cfg.probes_from == "eval"


def test_set_overrides_and_null_sections(tree):
    cfg = load_config(
        [tree / "experiments" / "exp.yaml"],
        ["lora=null", "training.max_steps=7", "interactions.schedule=[0, 5]", "name=other"],
    )
    assert cfg.lora is None and cfg.peft_config() is None
    assert cfg.training["max_steps"] == 7
    assert cfg.interactions["schedule"] == [0, 5]
    assert cfg.name == "other" and cfg.output_dir == "runs/other"
    assert cfg.origins["training.max_steps"] == "--set"
    off = load_config([tree / "experiments" / "exp.yaml"], ["interactions=null"])
    assert off.interactions is None and "off" in describe_plan(off)
    # YAML 1.1 reads `no` as false; a strategy means the string "no"
    no = load_config([tree / "experiments" / "exp.yaml"], ["training.save_strategy=no"])
    assert no.training["save_strategy"] == "no"


def test_compose_shorthand(tree):
    paths = compose_paths("m", "d", configs_dir=tree)
    assert [p.name for p in paths] == ["base.yaml", "m.yaml", "d.yaml"]
    cfg = load_config(paths)
    assert cfg.name == "m_d" and cfg.model.name == "org/llama-like"
    with pytest.raises(ConfigError, match="did you mean 'm'"):
        compose_paths("mm", "d", configs_dir=tree)
    with pytest.raises(ConfigError, match="--config FILE.yaml, or --model"):
        compose_paths(configs_dir=tree)


def test_parse_value():
    assert parse_value("1e-4") == pytest.approx(1e-4)
    assert parse_value("-2E3") == -2000.0
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value("null") is None
    assert parse_value("[a, b]") == ["a", "b"] and parse_value("{r: 8}") == {"r": 8}
    assert parse_value("v1.2-x") == "v1.2-x"


def test_env_variables_and_placeholders(tree, monkeypatch):
    write(tree / "env.yaml", "extends: experiments/exp.yaml\ndata: {path: '${ROWS_FILE}'}\n")
    monkeypatch.delenv("ROWS_FILE", raising=False)
    with pytest.raises(ConfigError, match=r"env.yaml\) needs the environment variable ROWS_FILE"):
        load_config([tree / "env.yaml"])
    # an override replaces the placeholder before it is ever needed
    cfg = load_config([tree / "env.yaml"], [f"data.path={tree / 'rows.jsonl'}"])
    assert cfg.data.path == str(tree / "rows.jsonl")
    monkeypatch.setenv("ROWS_FILE", str(tree / "rows.jsonl"))
    assert load_config([tree / "env.yaml"]).data.path == str(tree / "rows.jsonl")
    write(tree / "dflt.yaml", "extends: env.yaml\ndata: {path: '${NOPE_X:-rows.jsonl}'}\n")
    assert load_config([tree / "dflt.yaml"]).data.path == str((tree / "rows.jsonl").resolve())


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("lora.rank=4", r"lora.rank \(set in --set\): not a lora setting \(did you mean 'r'\?\)"),
        ("lora.r=0", r"lora.r=0 \(set in --set\): expected an integer >= 1"),
        ("lora.dropout=1.5", r"lora.dropout=1.5.*\[0, 1\)"),
        ("lora.target_modules=[qkv_proj]", r"'qkv_proj' is not a linear layer of a llama model"),
        ("lora.target_modules='(unclosed'", r"a valid regular expression"),
        ("model.dtype=bf8", r"model.dtype='bf8'.*one of auto, bfloat16"),
        ("model.trust_remote_code=yes please", r"model.trust_remote_code.*true or false"),
        ("traning.max_steps=3", r"traning \(set in --set\): not a config section.*'training'"),
        ("training.max_step=3", r"training.max_step.*not a field of trl.SFTConfig.*'max_steps'"),
        ("training.max_steps=many", r"training.max_steps='many'.*an integer"),
        ("training.learning_rate=fast", r"training.learning_rate='fast'.*a number"),
        ("data.format=csvish", r"data.format='csvish'.*one of auto, goemotions"),
        ("data.label_mode=some", r"data.label_mode.*'first' or 'all'"),
        ("data.eval_size=-1", r"data.eval_size=-1.*integer >= 0"),
        (
            "data.name=org/set",
            r"both of data.name \(set in --set\) and data.path \(set in .*d.yaml",
        ),
        ("data.instruction=no field", r"data.instruction.*must contain \{text\}"),
        ("data.path=missing.jsonl", r"data.path=.*missing.jsonl.*no such file"),
        ("data.path=rows.txt", r"unsupported file type"),
        ("interactions.n_players=40", r"interactions \(set in --set\): n_players=40"),
        ("interactions.n_player=4", r"unknown InteractionConfig field.*'n_players'"),
        ("interactions.probes_from=test", r"interactions.probes_from='test'.*'eval' or 'train'"),
        ("name=has space", r"name='has space'"),
        ("model.name=./no/such/dir", r"model.name=.*no such folder"),
    ],
)
def test_validation_errors_name_key_file_and_fix(tree, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config([tree / "experiments" / "exp.yaml"], [override])


def test_structural_errors(tree):
    write(tree / "a.yaml", "extends: b.yaml\n")
    write(tree / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config([tree / "a.yaml"])
    write(tree / "c.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="extends 'nowhere.yaml', but .* does not exist"):
        load_config([tree / "c.yaml"])
    write(tree / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config([tree / "list.yaml"])
    write(tree / "bad.yaml", "model: {name: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([tree / "bad.yaml"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tree / "absent.yaml"])
    with pytest.raises(ConfigError, match="use KEY=VALUE"):
        load_config([tree / "experiments" / "exp.yaml"], ["lora.r"])
    write(tree / "nomodel.yaml", "extends: base.yaml\ndata: {path: rows.jsonl}\n")
    with pytest.raises(ConfigError, match=r"model: expected a mapping"):
        load_config([tree / "nomodel.yaml"])
    write(tree / "noname.yaml", "extends: nomodel.yaml\nmodel: {family: llama}\n")
    with pytest.raises(ConfigError, match=r"model.name is required: hub id"):
        load_config([tree / "noname.yaml"])


def test_eval_consistency(tree):
    exp = [tree / "experiments" / "exp.yaml"]
    with pytest.raises(ConfigError, match="eval_strategy='steps'.*needs eval rows"):
        load_config(exp, ["data.eval_size=0", "training.eval_strategy=steps", "interactions=null"])
    with pytest.raises(ConfigError, match="probes_from='eval' but there are no eval rows"):
        load_config(exp, ["data.eval_size=0"])
    cfg = load_config(exp, ["data.eval_size=0", "interactions.probes_from=train"])
    assert cfg.probes_from == "train"


def test_family_checks_and_regex_targets(tree):
    exp = [tree / "experiments" / "exp.yaml"]
    regex = r"lora.target_modules=.*language_model.*\.(q_proj|v_proj)"
    cfg = load_config(exp, ["model.family=gemma3", regex])
    assert not cfg.notes
    with pytest.warns(UserWarning, match="also adapt the vision tower"):
        noisy = load_config(exp, ["model.family=gemma3"])  # a plain list hits SigLIP too
    assert "vision tower" in describe_plan(noisy)
    with pytest.raises(ConfigError, match="matches no linear layer of a llama model"):
        load_config(exp, [r"lora.target_modules=.*language_model.*\.q_proj"])
    assert load_config(exp, ["lora.target_modules=all-linear"]).lora.target_modules == "all-linear"
    # an unknown family is not checked here (the loaded model is, at run time)
    with pytest.warns(UserWarning, match="not one this package knows"):
        load_config(exp, ["model.family=rwkv", "lora.target_modules=[key]"])


def test_plan_and_yaml_roundtrip(tree, tmp_path):
    cfg = load_config(
        [tree / "experiments" / "exp.yaml"], ["training.gradient_accumulation_steps=2"]
    )
    plan = describe_plan(cfg, world_size=8)
    assert "LoRA r=16 alpha=16" in plan and "x 8 process(es) = " in plan
    assert "6 players from the eval rows" in plan
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(cfg.to_yaml())
    again = load_config([dumped])
    assert again.to_dict() == cfg.to_dict()


def test_default_lora_targets_come_from_peft(tree):
    """``target_modules: null`` means PEFT's own default for the family (its table first)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    exp = [tree / "experiments" / "exp.yaml"]
    cfg = load_config(exp, ["lora.target_modules=null"])  # family llama
    assert cfg.lora.target_modules == PEFT["llama"] == ["q_proj", "v_proj"]
    gemma = load_config(exp, ["lora.target_modules=null", "model.family=gemma3"])
    assert gemma.lora.target_modules == r".*language_model.*\.(q_proj|v_proj)"  # PEFT lacks it
    assert not gemma.notes  # and it stays off the vision tower
    with pytest.warns(UserWarning, match="not one this package knows"):
        other = load_config(exp, ["lora.target_modules=null", "model.family=custom"])
    assert other.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
