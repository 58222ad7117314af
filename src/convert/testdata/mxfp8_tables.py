"""Reference tables for ckptpilot's MXFP8 kernel, computed by msModelSlim 26.1.0's own functions
(ir/api/impl/mx_quantization.py: calculate_mx_qparam, mxfp_per_block_quantize), the ones its
data-free converter (processor/convert/mxfp8_quant.py) runs on every bf16 weight.

  /tmp/msm/gen/venv/bin/python src/convert/testdata/mxfp8_tables.py src/convert/testdata

mxfp8_exp.bin: for each bf16 bit pattern b in 0..0x7F80 (every non-negative finite value), the
  weight_scale byte msModelSlim writes for a block whose amax is b (shared exponent + 127, uint8).
mxfp8_e4m3_e{E}.bin: for each bf16 bit pattern b in 0..0x10000, the float8_e4m3fn byte of the
  value b quantized with shared exponent E (NaN / inf patterns: byte 0, never used: ckptpilot refuses them).
"""
import sys, os, torch
from msmodelslim.ir.qal.qbase import QDType, QScope, QParam, QScheme
from msmodelslim.ir.qal import QStorage
from msmodelslim.ir.api.impl.mx_quantization import calculate_mx_qparam, mxfp_per_block_quantize

out = sys.argv[1]
pos = torch.arange(0, 0x7F80, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
qp = calculate_mx_qparam(pos, pos.clone(), QDType.MXFP8, QScope.PER_BLOCK, True)
scale = (qp.ext["scale"] + 127).to(torch.uint8)
open(os.path.join(out, "mxfp8_exp.bin"), "wb").write(scale.numpy().tobytes())

allb = torch.arange(0, 0x10000, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
finite = torch.isfinite(allb)
x = torch.where(finite, allb, torch.zeros_like(allb))
for e in (0, -127, 119, -20):
    se = torch.full_like(x, float(e))
    p = QParam(scheme=QScheme(scope=QScope.PER_BLOCK, dtype=QDType.MXFP8, symmetric=True),
               ext={"scale": se, "offset": torch.zeros_like(se), "keep_mask": None})
    q = mxfp_per_block_quantize(QStorage(QDType.FLOAT, x), p).value.to(torch.float8_e4m3fn)
    open(os.path.join(out, f"mxfp8_e4m3_e{e}.bin"), "wb").write(q.view(torch.uint8).numpy().tobytes())
print("ok")
