"""The exports behind `conla export`: `policy` (a finetuned policy → a model directory), `lam` (the
LAM's encoder + quantizer → ONNX) and `text_encoder` (all-MiniLM-L6-v2 → the shared cache), with
the provenance they record (`lineage`, `provenance`)."""
