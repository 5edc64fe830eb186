"""The operations: one function per thing a user does, objects in and objects out.

| operation            | model level (any `nn.Module`)                   | checkpoint level (adapters)  |
|----------------------|-------------------------------------------------|------------------------------|
| train                | `train(config, data, recipe)`                   | (returns an `Outcome`)       |
| synthesize           | `synthesize(model, per_class, image_shape=...)` | + `save_synthetic`           |
| collect_statistics   | `collect_statistics(model, calibration)`        |                              |
| score                | `score(model, statistics)`                      |                              |
| prune                | `prune(model, calibration, target_flops)`       | `prune_checkpoint`           |
| unlearn              | `unlearn(model, split, method)`                 | `unlearn_checkpoint`         |
| finetune             | `finetune(student, teacher, data, epochs)`      | `finetune_checkpoint`        |
| evaluate             | `evaluate(model, data, split)`                  |                              |

Open-weight models (Hugging Face folders, torchvision/timm networks), objects in and out:
`prune_language_model(model, tokenizer, calibration, ...)` and, for a model too large to
hold, `prune_language_model_layerwise(SOURCE_DIR, OUT_DIR, calibration, ...)` (a causal LM
read, pruned and written one transformer layer at a time: folder in, folder out),
`evaluate_language_model(model, tokenizer, text, reference=...)` (a causal LM's
perplexity, an encoder's embedding agreement with a reference),
`prune_image_classifier(model, calibration, target_flops=...)` (CNN channels or ViT/Swin
MLP neurons) and `unlearn_image_classifier(model, data, forget_class)`; the CLI writes
their results back in the source's format (the model kind's adapter, `kinds/`).

The model kinds' pipeline stages and commands (`kinds/<kind>/<stage>.py`, `cli.py`) are
adapters over these functions: files or arguments in, one call, files and printed results
out (the run's report is rendered by the pipeline, `tasks/rendering.py`). They
import each operation from its own module, so a stage's import closure — its DVC code
dependencies — holds only the code that operation runs. `from modhifi_core import prune`
is the short form for users.
"""
