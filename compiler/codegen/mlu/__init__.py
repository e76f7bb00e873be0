"""The MLU backend: BANG C for Cambricon-style MLU accelerators, built by cncc or for Kiln's
host emulator (templates/mlu/kiln_mlu_emulate.h); docs/codegen-mlu.md."""
