"""What arithmetic each cell ran: one precision label means different things per
strategy (bench.measure.arithmetic records what the first forward pass saw)."""

from __future__ import annotations

import pandas as pd

from bench.analyze.load import latest

# (record column, table header)
COLUMNS = (("effective_precision", "precision"), ("effective_param_dtype", "weights kept in"),
           ("effective_param_dtype_in_forward", "weights in forward"),
           ("effective_compute_dtype", "computes in"), ("effective_autocast", "autocast"),
           ("effective_grad_scaler", "loss scaling"))

ARITHMETIC_LEGEND = (
    "seen inside the first training forward of the first ok repeat: the first layer's "
    "weight dtype, its output's dtype, and whether autocast was on; '-' under "
    "torch.compile (not probed)",
    "weights kept in: between steps, as the optimizer updates them (DeepSpeed also keeps "
    "an fp32 master partition); loss scaling: torch's GradScaler or DeepSpeed's own",
)


def arithmetic_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with an ok record that says what it ran."""
    if not len(records) or "effective_compute_dtype" not in records:
        return pd.DataFrame()
    ok = latest(records)
    ok = ok[(ok["status"] == "ok") & ok["effective_compute_dtype"].notna()]
    ok = ok.drop_duplicates("cell_id", keep="first")
    present = [(column, header) for column, header in COLUMNS if column in ok]
    table = ok[["cell_id", *(c for c, _ in present)]].rename(
        columns={"cell_id": "cell", **dict(present)})
    for header in ("autocast", "loss scaling"):
        if header in table:
            table[header] = table[header].map({True: "yes", False: "no"}).fillna("-")
    return table.reset_index(drop=True)
