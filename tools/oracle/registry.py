#!/usr/bin/env python3
"""What vLLM 0.33.0 serves, by architecture name: writes src/arch/vllm_registry.json.

    ~/vllm-oracle-venv/bin/python tools/oracle/registry.py

Read from the oracle's own vLLM and transformers (the versions `ckptpilot` mirrors), never by hand:
  - `registered`: every architecture `ModelRegistry` resolves, with its module:class
    (vllm/model_executor/models/registry.py :: _VLLM_MODELS, what get_supported_archs() lists);
  - `previously` / `out_of_tree`: _PREVIOUSLY_SUPPORTED_MODELS / _OOT_SUPPORTED_MODELS, whose names
    vLLM refuses with their own messages (ModelRegistry._raise_for_unsupported);
  - `transformers_backend`: the architectures vLLM serves through its Transformers backend when it
    does not register them (model_impl auto: ModelRegistry._try_resolve_transformers — a class of that
    name in transformers whose is_backend_compatible() or _can_set_attn_implementation() is true);
  - `config_model_types`: the model types whose config loads without remote code (transformers'
    CONFIG_MAPPING and vLLM's _CONFIG_REGISTRY); any other stops vLLM before a model is chosen;
  - `suffixes`: vLLM's architecture suffixes (vllm/config/model.py :: _SUFFIX_TO_DEFAULTS), through
    which a pooling / generation variant resolves to a registered base architecture.
"""
import inspect
import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "src", "arch", "vllm_registry.json")


def main():
    import transformers
    import vllm
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from vllm.config.model import _SUFFIX_TO_DEFAULTS
    from vllm.model_executor.models import registry as r
    from vllm.transformers_utils.config import _CONFIG_REGISTRY

    registered = {a: f"{m.module_name}:{m.class_name}" if hasattr(m, "module_name") else str(m)
                  for a, m in sorted(r.ModelRegistry.models.items())}
    backend = set(r._TRANSFORMERS_BACKEND_MODELS)
    for name in dir(transformers):
        if name in registered or name in backend or not name[:1].isupper():
            continue
        try:
            cls = getattr(transformers, name)
        except Exception:  # an optional dependency missing: transformers raises on access
            continue
        if not inspect.isclass(cls) or not issubclass(cls, transformers.PreTrainedModel):
            continue
        try:
            ok = cls.is_backend_compatible() or cls._can_set_attn_implementation()
        except Exception:
            ok = False
        if ok:
            backend.add(name)
    doc = {
        "_source": "tools/oracle/registry.py, from the oracle venv's vLLM and transformers",
        "vllm_version": vllm.__version__,
        "transformers_version": transformers.__version__,
        "registered": registered,
        "previously": dict(sorted(r._PREVIOUSLY_SUPPORTED_MODELS.items())),
        "out_of_tree": dict(sorted(r._OOT_SUPPORTED_MODELS.items())),
        "transformers_backend": sorted(backend - set(registered)),
        "config_model_types": sorted(set(CONFIG_MAPPING_NAMES) | set(_CONFIG_REGISTRY)),
        "suffixes": [s for s, _ in _SUFFIX_TO_DEFAULTS],
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=0, sort_keys=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(registered)} registered, {len(doc['transformers_backend'])} through the Transformers backend, "
          f"{len(doc['config_model_types'])} config model types", file=sys.stderr)


if __name__ == "__main__":
    main()
