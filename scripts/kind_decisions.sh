#!/bin/sh
# The decisions on a model's kind in the code under ROOT (issue 22's count): a kind predicate,
# a source-prefix test, a recorded record kind, `kind == "..."`. Lines that are not kind
# decisions are dropped: fidelity.py's score kind, stock_widths' model_type, load_hf's
# `kind == "auto"` loader mode, definitions and docstrings.  Usage: scripts/kind_decisions.sh ROOT
cd "${1:-.}" || exit 1
grep -rnE 'model_kind\(|is_image\(|is_language\(|is_zoo_source|is_image_source|is_image_model|_is_image_classifier|pruned_components\(|\.is_hf\b|startswith\(\(?"(hf|torchvision|timm|python):|kind(\.name)? ?[!=]= ?"|record\["record"\] ?[!=]=|ZOO_SOURCE|ZOO_FOLDER|"hf-source"|"hf-folder"|isinstance\([^)]*Kind\)|scheme ?[!=]= ?"|scheme in \(' \
  --include='*.py' modhifi_core kinds tasks flows 2>/dev/null \
  | grep -vE ':[0-9]+:[[:space:]]*(#|""")' \
  | grep -vE 'fidelity\.py|stock_widths\.py|kind == "auto"|def model_kind|def pruned_components|model_kind\(DIR\) ->'
