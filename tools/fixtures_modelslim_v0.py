"""Quantize a prepared tiny model (see fixtures_modelslim_prep.py) to W8A8_DYNAMIC with msModelSlim's older
Python API (msmodelslim.pytorch.llm_ptq: Calibrator + QuantConfig(dev_type='cpu'), save_type=['safe_tensor']).
Usage: python fixtures_modelslim_v0.py PREPARED_MODEL_DIR CALIB.jsonl OUT_DIR"""
import json, random, sys
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from msmodelslim.pytorch.llm_ptq.llm_ptq_tools import Calibrator, QuantConfig

model_dir, calib, out = sys.argv[1:4]
random.seed(0); np.random.seed(0); torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16).eval()
calib_data = []
for line in open(calib):
    ids = tok(json.loads(line)["inputs_pretokenized"], return_tensors="pt")
    calib_data.append([ids["input_ids"]])
cfg = QuantConfig(w_bit=8, a_bit=8, is_dynamic=True, dev_type="cpu", act_method=1, mm_tensor=False,
                  disable_names=[], disable_last_linear=True)
calibrator = Calibrator(model, cfg, calib_data=calib_data, disable_level="L0")
calibrator.run()
calibrator.save(out, save_type=["safe_tensor"])
