"""Make a transformers checkpoint ready for msModelSlim on the CPU: copy it, add a minimal WordLevel
tokenizer (msModelSlim insists on loading one) and write a small calibration jsonl (4 x 32 tokens, seed 0).
From shared/recipes/modelslim/prep_model.py. Usage: python fixtures_modelslim_prep.py SRC_MODEL_DIR DST_DIR CALIB.jsonl"""
import json, os, random, shutil, sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

src, dst, calib = sys.argv[1:4]
shutil.rmtree(dst, ignore_errors=True); shutil.copytree(src, dst)
vocab_size = json.load(open(os.path.join(dst, "config.json")))["vocab_size"]
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3} | {f"t{i}": i for i in range(4, vocab_size)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")); tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(dst)
rng = random.Random(0)  # 4 samples x 32 random tokens, seed 0
with open(calib, "w") as f:
    for _ in range(4):
        f.write(json.dumps({"inputs_pretokenized": " ".join(f"t{rng.randrange(4, min(1000, vocab_size))}" for _ in range(32))}) + "\n")
