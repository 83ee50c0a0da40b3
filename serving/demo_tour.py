"""The last act of ``make demo``: serve the Bento and show it working over real HTTP.

Starts ``bentoml serve <bento>``, asks for carousels for customers of three different
segments and for an unknown visitor, posts a short shopping session for one of them and
shows how their next carousels changed, leaves another customer's basket for twenty
minutes so a tactics rule fires, shows one customer from each arm of the running
experiment, prints the evaluation summary and where the reports are, prints the URLs of
the storefront demo and the segment console (``serving/ui``), and stops the server, or
keeps it up until Ctrl-C with ``segrec demo --serve`` (``make demo SERVE=1``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from segrec.experiments import load_experiments
from segrec.service_process import bentoml_command, free_port, running_service
from segrec.settings import Settings
from serving.loading import feature_clock

UNKNOWN_VISITOR = "c_0000000000000000"
SHOWN = 5


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url} answered {error.code}: {error.read().decode()}") from None


def pick_customers(settings: Settings, count: int = 3) -> pd.DataFrame:
    """One consenting customer from each of the ``count`` largest segments (seeded)."""
    segments = pd.read_parquet(settings.features_dir / "customer_segments.parquet")
    newest = segments[segments["event_timestamp"] == segments["event_timestamp"].max()]
    largest = newest["segment_id"].value_counts().index[:count]
    chosen = [
        newest[newest["segment_id"] == s].sample(1, random_state=settings.seed) for s in largest
    ]
    return pd.concat(chosen, ignore_index=True)


class Tour:
    def __init__(self, settings: Settings, url: str, console: Console) -> None:
        self.settings = settings
        self.url = url
        self.console = console
        products = pd.read_parquet(settings.clean_dir / "products.parquet")
        self.products = products.set_index("product_id")

    def carousel(self, customer_id: str, **request: Any) -> dict[str, Any]:
        return post(f"{self.url}/recommend", {"customer_id": customer_id, "k": 10, **request})

    def show(
        self, title: str, answer: dict[str, Any], highlight: AbstractSet[str] = frozenset()
    ) -> None:
        segment = answer["segment"]
        caption = f"segment: {segment['name']} ({segment['assigned']})" if segment else "segment: -"
        caption += f" | stage: {answer['lifecycle_stage'] or '-'}"
        caption += f" | fallback: {answer['fallback'] or 'none (fully personal)'}"
        tactics = answer.get("tactics") or {}
        if tactics.get("rules"):
            acts = ", ".join(f"{k}={v}" for k, v in tactics.items() if k != "rules")
            caption += f"\nrules: {', '.join(tactics['rules'])}" + (f" ({acts})" if acts else "")
        if answer.get("experiment"):
            experiment = answer["experiment"]
            caption += f"\nexperiment: {experiment['name']}, variant {experiment['variant']}"
        table = Table(title=title, caption=caption, title_justify="left")
        for column in ("#", "product", "category", "price", "score", "mostly from"):
            table.add_column(column)
        for rank, item in enumerate(answer["items"][:SHOWN], start=1):
            product = self.products.loc[item["product_id"]]
            parts = item["contributions"]
            top = sorted(parts, key=parts.__getitem__, reverse=True)[:2]
            mark = "[bold green]new[/] " if item["product_id"] in highlight else ""
            table.add_row(
                str(rank),
                f"{mark}{str(product['title'])[:38]}",
                str(product["category"]),
                f"{product['price']:.2f}",
                f"{item['score']:.3f}",
                ", ".join(top),
            )
        self.console.print(table)

    def run(self) -> None:
        customers = pick_customers(self.settings)
        self.console.rule("Carousels for three segments and an unknown visitor")
        for customer_id in customers["customer_id"].astype(str):
            self.show(f"Home 'for you': {customer_id}", self.carousel(customer_id))
        self.show(f"Home for an unknown visitor {UNKNOWN_VISITOR}", self.carousel(UNKNOWN_VISITOR))

        shopper = str(customers.iloc[0]["customer_id"])
        before = self.carousel(shopper)
        self.console.rule(f"A live session for {shopper}")
        similar = post(f"{self.url}/similar", {"product_id": before["items"][3]["product_id"]})
        browsed = [before["items"][3]["product_id"]] + [i["product_id"] for i in similar["items"]]
        events = [
            {"customer_id": shopper, "product_id": p, "type": "view", "session_id": "demo"}
            for p in browsed[:4]
        ]
        events.append(
            {
                "customer_id": shopper,
                "product_id": browsed[1],
                "type": "add_to_cart",
                "price": float(self.products.loc[browsed[1], "price"]),
                "session_id": "demo",
            }
        )
        answer = post(f"{self.url}/events", {"events": events})
        self.console.print(
            f"POST /events: viewed {', '.join(browsed[:4])}, carted {browsed[1]} -> "
            f"{answer['accepted']} accepted, {len(answer['rejected'])} rejected, session "
            f"updated: {answer['session_updated']}"
        )
        after = self.carousel(shopper)
        was = {i["product_id"] for i in before["items"]}
        fresh = {i["product_id"] for i in after["items"]} - was
        self.show("Home 'for you' after the session", after, fresh)
        self.console.print(
            f"{len(fresh)} of {len(after['items'])} items are new after the session: viewed "
            "and carted items make way, ALS folds the session in, content follows what was "
            "browsed."
        )
        self.show("Cart 'complete the basket'", self.carousel(shopper, placement="cart"))
        self.abandoned_basket(str(customers.iloc[1]["customer_id"]), browsed[2])
        self.experiment(customers)
        self.summary()

    def abandoned_basket(self, customer_id: str, product_id: str) -> None:
        """A basket left 20 minutes ago: the cart-abandonment rule fires (the service's
        clock is the data's, computed here the same way)."""
        self.console.rule(f"A basket {customer_id} left twenty minutes ago")
        # The service runs on the data's clock (run_tour sets it); so must this.
        data_clock = feature_clock(self.settings.model_copy(update={"feature_clock": "data"}))
        left_at = data_clock() - dt.timedelta(minutes=20)
        event = {
            "customer_id": customer_id,
            "product_id": product_id,
            "type": "add_to_cart",
            "ts": left_at.isoformat(),
            "price": float(self.products["price"][product_id]),
            "session_id": "demo-abandoned",
        }
        posted = post(f"{self.url}/events", {"events": [event]})
        if posted["rejected"]:
            raise RuntimeError(f"the demo's cart event was rejected: {posted['rejected']}")
        answer = self.carousel(customer_id)
        self.show("Home 'for you' with a basket waiting", answer)
        fired = answer.get("tactics", {}).get("rules", [])
        self.console.print(f"Tactics rules applied: {', '.join(fired) or 'none'}")

    def experiment(self, customers: pd.DataFrame) -> None:
        """One customer in each arm of the first running experiment."""
        config = load_experiments(self.settings.experiments_file)
        if not config.experiments:
            return
        experiment = config.experiments[0]
        self.console.rule(f"Experiment {experiment.name}: one customer per variant")
        segments = pd.read_parquet(self.settings.features_dir / "customer_segments.parquet")
        pool = [str(c) for c in segments["customer_id"].drop_duplicates()]
        placement = experiment.placements[0]
        for variant in experiment.shares():
            chosen = next((c for c in pool if experiment.assign(c) == variant), None)
            if chosen is None:
                continue
            answer = self.carousel(chosen, placement=placement)
            self.show(f"{placement} for {chosen} (variant {variant})", answer)

    def summary(self) -> None:
        self.console.rule("Evaluation summary")
        path = self.settings.reports_dir / "evaluation.json"
        report = json.loads(path.read_text())
        table = Table(
            title=f"NDCG@{report['k']} on the held-out test window ({report['protocol']})"
        )
        # With a re-ranker the served blend is re-ranked: show the weights alone beside it.
        reranked = bool(report.get("rerank", {}).get("chosen"))
        columns = ["view", "popularity", "best single model"]
        columns += ["blend weights", "blend re-ranked"] if reranked else ["segment blend"]
        for column in columns:
            # Folded, never cut: an 80-column terminal still shows every name and figure.
            table.add_column(column, overflow="fold")
        for view, body in report["protocols"].items():
            ndcg = {name: run["means"]["ndcg"] for name, run in body["summary"].items()}
            # Trained models only: the table also holds the random baseline and, on synthetic
            # data, the generator's oracle, which no model can be.
            singles = {n: v for n, v in ndcg.items() if n in report["models"]}
            best = max(singles, key=singles.__getitem__)
            blends = ["linear_blend", "blend"] if reranked else ["blend"]
            table.add_row(
                # Spaces for underscores: a narrow terminal wraps at words.
                view.replace("_", " "),
                f"{ndcg.get('popularity', float('nan')):.3f}",
                f"{best.replace('_', ' ')} {singles[best]:.3f}",
                *(f"{ndcg[b]:.3f}" if b in ndcg else "-" for b in blends),
            )
        self.console.print(table)
        reports = self.settings.reports_dir
        self.console.print(
            f"Reports: {reports / 'data_quality.json'}, {reports / 'segments.html'}, "
            f"{reports / 'evaluation.html'}"
        )


def run_tour(settings: Settings, bento_tag: str, console: Console, serve: bool = False) -> None:
    """Serve ``bento_tag`` on a free port for the tour, print where the storefront demo and
    the console are, then stop it (``serve``: keep it up until Ctrl-C)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "SEGREC_DATA_DIR": str(settings.data_dir.resolve()),
        "SEGREC_REPORTS_DIR": str(settings.reports_dir.resolve()),
        # The synthetic history ends on a fixed day: judge feature freshness, and stamp
        # the demo's events, on the data's clock so retraining on them stays coherent.
        "SEGREC_FEATURE_CLOCK": "data",
        "BENTOML_HOME": str(settings.bentoml_store.resolve()),
    }
    log = settings.data_dir / "demo" / "service.log"
    console.print(f"Starting bentoml serve {bento_tag} on {url} (log: {log})")
    command = bentoml_command(bento_tag, port)
    with running_service(command, url, log, env, cwd=Path.cwd()) as service:
        Tour(settings, url, console).run()
        console.rule("In the browser")
        console.print(f"Storefront demo: {url}/ui/\nSegment console: {url}/ui/console.html")
        if serve:
            console.print("Serving until Ctrl-C.")
            try:
                while service.process.poll() is None:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        else:
            console.print("(make demo SERVE=1 keeps the service up to open them)")
    console.print("Service stopped.")
