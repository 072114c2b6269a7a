"""Train: configure a contrastive run, start it in a background process, watch it live; cancel, resume or delete it."""

import shlex
from dataclasses import replace

import streamlit as st

from ssl_viz.augment import policy_to_spec
from ssl_viz.cli import CliError, train_flags
from ssl_viz.config import IMAGE_SIZES, TrainConfig, method_preset, suggested_lr, suggested_recipe
from ssl_viz.data import DATASETS, PATH_NAMES, display_title
from ssl_viz.device import pick_device
from ssl_viz.encoders import ENCODERS
from ssl_viz.jobs import JobError, list_runs, max_runs, start_run
from ssl_viz.methods import METHODS
from ssl_viz.ui.loaders import get_dataset
from ssl_viz.ui.run_panel import augmentation_knobs, live_panel, pick_run
from ssl_viz.ui.workspace import current_workspace

st.title("Train")
st.markdown("Train an encoder with no labels: the method pulls two augmented views of an image together and pushes other images "
            "away, so the **augmentations you switch on decide what the encoder learns to ignore**. The run trains in a background "
            "process (closing the tab does not stop it); labels are used only by the kNN monitor, whose accuracy rises as classes "
            f"separate while alignment falls and uniformity spreads the embeddings. At most {max_runs()} run(s) train at once; "
            "others wait in a queue.")

TRAIN_PAGE_KNN_EVERY_S = 3.0  # the live chart's time cadence: a 29 s default run reads about eight times
ws = current_workspace()
c1, c2, c3 = st.columns(3)
method = c1.selectbox("Method", list(METHODS), index=list(METHODS).index(TrainConfig().method), key="tr_method")
D = method_preset(method)  # the method's own recipe (bench/RESULTS.md, "Recipe search"); the widgets start from it
M = D.method_cfg
names = [n for n in DATASETS if n != "folder"]
if ws.dataset.partition(":")[0] in PATH_NAMES and ":" in ws.dataset and ws.dataset not in names:
    names.insert(0, ws.dataset)  # the workspace's own folder (folder:PATH, cifar10:PATH, ...), by its display name
dataset = c2.selectbox("Dataset", names, index=names.index(ws.dataset) if ws.dataset in names else 0, key="tr_dataset",
                       format_func=display_title)
try:
    ds = get_dataset(dataset, "train")
except Exception as exc:  # a missing dataset must not take the page down
    st.error(f"Cannot load {display_title(dataset)}: {exc}")
    st.stop()
is_folder = dataset.startswith("folder:")
image_size = c2.select_slider("Image size (px)", list(IMAGE_SIZES), value=64, key="tr_image_size",
                              help="your images are resized (short side) and centre-cropped to this side") if is_folder else None
size = image_size or ds.image_size[0]
device_kind = "cuda" if pick_device(D.device).type == "cuda" else "cpu"
recipe = suggested_recipe(size, device_kind, method)
# The suggestion sets the encoder, width and batch widgets when it changes, except those the user has set to
# something else than the previous suggestion (an explicit choice is kept).
state = st.session_state
shown = state.get("tr_recipe_applied")
for key, value in (("tr_encoder", recipe.encoder), ("tr_width", recipe.encoder_width), ("tr_batch", recipe.batch_size)):
    previous = None if shown is None else dict(zip(("tr_encoder", "tr_width", "tr_batch"), shown))[key]
    if key not in state or state[key] == previous:
        state[key] = value
state["tr_recipe_applied"] = (recipe.encoder, recipe.encoder_width, recipe.batch_size)
where = "the GPU" if device_kind == "cuda" else "the CPU"
width_text = f" width {recipe.encoder_width}" if recipe.encoder in ("small-cnn", "resnet18-cifar") else ""
c2.caption(f"For {size} px images on {where}: {recipe.encoder}{width_text}, batch {recipe.batch_size} — {recipe.reason}.")
encoder = c1.selectbox("Encoder", list(ENCODERS), key="tr_encoder", format_func=lambda e: f"{e} — {ENCODERS[e]}")
width = c1.select_slider("Width", [8, 16, 32, 64], key="tr_width") if encoder in ("small-cnn", "small-cnn-k7", "resnet18-cifar") else D.encoder_width
label = c2.selectbox("Label factor (kNN monitor)", list(ds.factors), key="tr_label") if ds.factors else None
batch = c2.select_slider("Batch size", [16, 32, 64, 128, 256, 512, 1024], key="tr_batch")
tau = c2.slider("Temperature τ", 0.05, 1.0, M.temperature, 0.01, key=f"tr_tau_{method}")
budget = c3.radio("Budget", ["epochs", "seconds"], horizontal=True, key="tr_budget")
amount = c3.number_input("Epochs" if budget == "epochs" else "Seconds", min_value=0.1 if budget == "epochs" else 5.0,
                         value=D.epochs if budget == "epochs" else 300.0, key=f"tr_amount_{budget}")
seed = c3.number_input("Seed", 0, 10**6, D.seed, key="tr_seed")
knn_every = c3.number_input("kNN monitor every (steps, 0 = off)", 0, 10**6, D.knn_every, key="tr_knn")
knn_every_s = c3.number_input("… and every (seconds, 0 = off)", 0.0, 3600.0, TRAIN_PAGE_KNN_EVERY_S, 1.0, key="tr_knn_s",
                              help="a curve from the first seconds of a short run; the monitor never takes more than a fifth of the time")
lr = c3.number_input("Peak learning rate (AdamW)", 1e-5, 1.0, D.lr if encoder == D.encoder else suggested_lr(encoder), format="%.4g",
                     key=f"tr_lr_{method}_{encoder}")

policy = augmentation_knobs(D.augment)
cfg = replace(D, method=method, encoder=encoder, encoder_width=width, dataset=dataset, dataset_label=label, image_size=image_size,
              augment=policy_to_spec(policy),
              batch_size=batch, lr=float(lr), seed=int(seed), knn_every=int(knn_every), knn_every_s=float(knn_every_s), method_cfg=replace(M, temperature=tau),
              **({"epochs": float(amount)} if budget == "epochs" else {"time_budget": float(amount)}))
try:
    st.code("python -m ssl_viz train " + shlex.join(train_flags(cfg)), language="bash")
except CliError as exc:
    st.error(str(exc))
if st.button("Start training", type="primary", key="tr_start"):
    try:
        st.session_state["tr_watch"] = str(start_run(cfg))
    except (JobError, ValueError, OSError) as exc:
        st.error(f"Cannot start: {exc}")

st.subheader("Live")
runs = list_runs()
if not runs:
    st.info("No runs yet: set a configuration above and press **Start training**.")
    st.stop()
live_panel(*pick_run(runs))
