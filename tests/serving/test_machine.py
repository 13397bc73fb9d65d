"""CPU feature detection: real on this host, parsing checked on fixed text."""

from __future__ import annotations

from aiaas.serving import machine


def test_cpu_features_shape():
    features = machine.cpu_features()
    for key in ("avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16"):
        assert isinstance(features[key], bool)
    assert isinstance(features["cores"], int) and features["cores"] >= 1


def test_flag_parsing_and_derived_capabilities():
    text = (
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n"
    )
    flags = machine._cpuinfo_flags(text)
    assert {"avx2", "avx512_vnni", "amx_tile"} <= flags
    assert machine.has_int8_dot_product({"avx512_vnni": True})
    assert machine.has_int8_dot_product({"amx_int8": True})
    assert not machine.has_int8_dot_product({"avx2": True})
    assert machine.has_bf16({"amx_bf16": True}) and not machine.has_bf16({})


def test_bf16_probe_answers_with_a_reason_or_none():
    error = machine.ort_bf16_matmul_error()
    assert error is None or "bfloat16" in error
