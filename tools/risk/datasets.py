"""Write the labelled data sets `strongroom risk eval DIR` reads, from files that ship inside
packages pinned in tools/risk/requirements.txt (nothing is downloaded from elsewhere), and the
folder's datasets.toml.

- shuttle (river): ODDS Shuttle anomalies, the first 10,000 rows.
- phishing (river): 1,250 web pages, 548 phishing.
- banana (river): 5,300 points of two interleaved classes (a curved border).
- segment (river): image regions; "path" against the other six classes (a rare class).
- breast-cancer (scikit-learn): 569 cases, 212 malignant; features spanning orders of magnitude.

Usage: datasets.py DIR
"""

import csv
import gzip
import io
import sys
import zipfile
from pathlib import Path

import river.datasets
import sklearn.datasets

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
river_dir = Path(river.datasets.__file__).parent


def write(name, header, rows):
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_csv(text):
    r = csv.reader(io.StringIO(text))
    header = next(r)
    return header, list(r)


# Shuttle: features f1..f9 and the label (1 = anomaly).
header, rows = read_csv(gzip.open(river_dir / "shuttle.csv.gz", "rt").read())
write("shuttle", header[:-1] + ["anomaly"], [r[:-1] + [r[-1]] for r in rows[:10_000]])

# Phishing: the label is is_phishing (0/1).
header, rows = read_csv(gzip.open(river_dir / "phishing.csv.gz", "rt").read())
write("phishing", header, rows)

# Banana (LIBSVM lines "label 1:x1 2:x2"): two features and a class of -1 or 1.
with zipfile.ZipFile(river_dir / "banana.zip") as z:
    text = z.read("banana.all.txt").decode()
rows = []
for line in text.splitlines():
    parts = line.split()
    if parts:
        values = dict(p.split(":") for p in parts[1:])
        rows.append([values["1"], values["2"], "1" if float(parts[0]) > 0 else "0"])
write("banana", ["x1", "x2", "label"], rows)

# Segment: 19 numeric features; "path" against the rest.
with zipfile.ZipFile(river_dir / "segment.csv.zip") as z:
    text = z.read(z.namelist()[0]).decode()
header, rows = read_csv(text)
label_at = header.index("category")
features = [h for i, h in enumerate(header) if i != label_at]
write(
    "segment",
    features + ["is_path"],
    [[v for i, v in enumerate(r) if i != label_at] + ["1" if r[label_at] == "path" else "0"] for r in rows],
)

# Breast cancer (Wisconsin diagnostic), bundled with scikit-learn: 1 = malignant.
bc = sklearn.datasets.load_breast_cancer()
names = [n.replace(" ", "_") for n in bc.feature_names]
write(
    "breast-cancer",
    names + ["malignant"],
    [[repr(float(v)) for v in x] + ["1" if y == 0 else "0"] for x, y in zip(bc.data, bc.target)],
)

(out / "datasets.toml").write_text(
    """# Written by scripts/risk-datasets from files bundled in river and scikit-learn.
[[dataset]]
name = "shuttle"
file = "shuttle.csv"
label = "anomaly"

[[dataset]]
name = "phishing"
file = "phishing.csv"
label = "is_phishing"

[[dataset]]
name = "banana"
file = "banana.csv"
label = "label"

[[dataset]]
name = "segment"
file = "segment.csv"
label = "is_path"

[[dataset]]
name = "breast-cancer"
file = "breast-cancer.csv"
label = "malignant"
"""
)
print(out.resolve())
