"""Write the generic label table of the `nih-plus-kermany` experiment.

NIH films keep the demo's patient split (read from `evaluate` reports of
the demo's validation and test splits, so no NIH test patient is trained
on); the Kermany films of the content gate's training half join the
training split with only Pneumonia known (the other labels blank, which the
loss masks). The Kermany external half stays out: it is the external set.

    python3 mixed-table.py NIH_LABELS KERMANY_LABELS KERMANY_HELD_OUT \
        NIH_VALIDATION.json NIH_TEST.json OUT.csv
"""
import csv
import json
import os
import sys

nih_csv, kermany_csv, held_out, val_json, test_json, out = sys.argv[1:7]
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion",
          "Emphysema", "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule",
          "Pleural_Thickening", "Pneumonia", "Pneumothorax"]


def images(report):
    return {os.path.realpath(r["image"]) for r in json.load(open(report))["rows"]}


validation, test = images(val_json), images(test_json)
external = {os.path.realpath(line.strip()) for line in open(held_out) if line.strip()}
out_dir = os.path.dirname(os.path.realpath(out))
rows = []
nih_root = os.path.dirname(os.path.realpath(nih_csv))
for r in csv.DictReader(open(nih_csv)):
    if r["age"] and float(r["age"]) < 18:
        continue  # children stay out, as the demo holds them out
    path = os.path.realpath(os.path.join(nih_root, r["file"]))
    split = "test" if path in test else "validation" if path in validation else "train"
    rows.append({"path": os.path.relpath(path, out_dir), "patient_id": "nih-" + r["patient_id"],
                 "institution": "nih", "age": r["age"], "sex": r["sex"], "view": r["view"],
                 "split": split, **{k: r[k] for k in LABELS}})
kermany_root = os.path.dirname(os.path.realpath(kermany_csv))
for r in csv.DictReader(open(kermany_csv)):
    path = os.path.realpath(os.path.join(kermany_root, r["file"]))
    if path in external:
        continue
    rows.append({"path": os.path.relpath(path, out_dir), "patient_id": "kermany-" + r["patient_id"],
                 "institution": "kermany", "age": "", "sex": "", "view": "", "split": "train",
                 **{k: (r["pneumonia"] if k == "Pneumonia" else "") for k in LABELS}})
if not rows:
    sys.exit("no films: check the label tables and the evaluate reports")
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
print(f"{out}: {len(rows)} films", file=sys.stderr)
