"""Demo data for the place_knowledge job: the application's tables and a research source.

    python -m worker.demo_place_knowledge --out DIR [--pois 300] [--seed 0]

Creates `pois`, `areas` and `place_knowledge` as the application has them (the job's
worker/jobs/place_knowledge/tables.sql) in PLACE_KNOWLEDGE_TABLE's schema unless they exist, with a few
hundred Norwegian places and areas and some facts already there; then writes DIR as the seed's
research exporter does: one `<id>.json` per POI or area, `{"poi_id": ..., "facts": [...]}`, and a
`manifest.json`. The facts repeat some already in the table and some of each other (other
spacing, a non-breaking space), and a few break the table's rules, so a run shows every
counter. The same seed gives the same data; a second call adds nothing to the tables.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from worker.config import environment, load_settings
from worker.demo import job_tables
from worker.exceptions import ConfigError
from worker.jobs.place_knowledge import PlaceKnowledgeJob

TOWNS = ("Trondheim", "Bergen", "Tromsø", "Ålesund", "Bodø", "Røros", "Lærdal", "Førde", "Sørfold", "Kristiansund", "Mo i Rana", "Hønefoss")
KINDS = ("kirke", "bryggeri", "kafé", "museum", "fjellstue", "brygge", "smie", "mølle", "bakeri", "gårdsbutikk", "bokhandel", "fyr")
PREFIXES = ("Gamle", "Nye", "Store", "Lille", "Øvre", "Nedre", "Søndre", "Nordre")
AREAS = ("Bakklandet", "Møllenberg", "Lademoen", "Ila", "Øya", "Nordnes", "Sandviken", "Løkkeveien", "Tøyen", "Grünerløkka",
         "Sjøsiden", "Fjæra", "Ørnes", "Bjørkelangen", "Hårstad", "Sætre", "Kjøpmannsgata", "Brattøra", "Nyhavna", "Skansen")
FACTS = {
    "history": ("{name} ble bygd på {century}-tallet og brant i {year}.", "Stedet har vært i samme families eie siden {year}."),
    "architecture": ("Bygningen er en laftet tømmerbygning med torvtak.", "Fasaden i {name} er tegnet av en lokal arkitekt i {year}."),
    "food": ("Her serveres rømmegrøt og spekemat på lørdager.", "Kjøkkenet bruker fisk fra fjorden og bær fra liene rundt {town}."),
    "culture": ("Hver sommer arrangeres det konserter i bakgården.", "{name} er kjent for sine fortellerkvelder om vinteren."),
    "people": ("En kjent skald skal ha bodd her på {century}-tallet.", "Eieren har drevet stedet i {n} år."),
    "nature": ("Fra terrassen ser man nordlyset fra oktober til mars.", "Elva ved {name} er full av laks om høsten."),
    "practical": ("Åpent tirsdag til søndag, 11–17.", "Det er gratis parkering bak {name}."),
    "local_knowledge": ("Spør etter dagens kake: den står ikke på menyen.", "Lokalbefolkningen kaller stedet «{nick}»."),
    "spatial": ("Ligger {n} minutters gange fra sentrum av {town}.", "Stedet ligger ved den gamle kongeveien mot {town}."),
}


def place_names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` POIs: (id, name), names like "Øvre Røros bryggeri"."""
    return [(f"poi-{i:04d}", f"{rng.choice(PREFIXES)} {rng.choice(TOWNS)} {rng.choice(KINDS)}") for i in range(count)]


def facts_for(rng: random.Random, name: str, count: int) -> list[dict]:
    """`count` facts about `name`, with a few repeats in other spacing."""
    found: list[dict] = []
    for topic in rng.sample(sorted(FACTS), k=min(count, len(FACTS))):
        text = rng.choice(FACTS[topic]).format(
            name=name, town=rng.choice(TOWNS), century=rng.choice((16, 17, 18)), year=rng.randint(1650, 1990),
            n=rng.randint(3, 40), nick=name.split()[-1].capitalize() + "-en",
        )
        fact = {"topic": topic, "fact_text": text, "source_name": rng.choice(("Visit Norway", "Lokalhistorie", "Wikipedia"))}
        if rng.random() < 0.3:
            fact["fact_text_en"] = f"(English) {text}"
        if rng.random() < 0.2:
            fact.update(confidence="verified", display_ready=True, source_url="https://www.visitnorway.no/")
        found.append(fact)
        if rng.random() < 0.08:  # the exporter listed it twice, spaced otherwise
            found.append({**fact, "fact_text": "  " + text.replace(" ", "\u00a0", 1) + " "})
    if rng.random() < 0.03:
        found.append({"topic": "weather", "fact_text": f"Det regner ofte i {name}."})  # no such topic: a failure
    return found


def seed(out: Path, pois: int, seed: int) -> dict[str, int]:
    env = environment()
    settings = load_settings(env)
    table = PlaceKnowledgeJob.read_settings(env, required=False).table
    rng = random.Random(seed)
    places = place_names(rng, pois)
    areas = [(f"area-{i:02d}", name) for i, name in enumerate(AREAS)]
    by_id = {pid: facts_for(rng, name, rng.randint(3, 8)) for pid, name in places}
    by_id.update({aid: facts_for(rng, name, rng.randint(2, 5)) for aid, name in areas})
    with job_tables(settings, "place_knowledge", table) as (conn, _):
        conn.cursor().executemany("INSERT INTO pois VALUES (%s, %s) ON CONFLICT DO NOTHING", places)
        conn.cursor().executemany("INSERT INTO areas VALUES (%s, %s) ON CONFLICT DO NOTHING", areas)
        # Some facts the application already has, one in ten of the POIs' first facts.
        existing = [(f"existing-{pid}", pid, fs[0]["topic"], fs[0]["fact_text"]) for pid, fs in list(by_id.items())[::10] if pid.startswith("poi-")]
        conn.cursor().executemany(
            "INSERT INTO place_knowledge (id, poi_id, topic, fact_text) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", existing
        )
    out.mkdir(parents=True, exist_ok=True)
    for pid, fs in by_id.items():
        parent = "poi_id" if pid.startswith("poi-") else "area_id"
        (out / f"{pid}.json").write_text(json.dumps({parent: pid, "facts": fs}, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps({"files": len(by_id), "generated_by": "worker.demo_place_knowledge"}))
    return {"pois": len(places), "areas": len(areas), "facts": sum(map(len, by_id.values())), "existing": len(existing)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_place_knowledge", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the research files to")
    parser.add_argument("--pois", type=int, default=300, help="number of POIs (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data")
    args = parser.parse_args(argv)
    try:
        summary = seed(args.out, args.pois, args.seed)
    except ConfigError as error:
        print(f"demo_place_knowledge: config error: {error}", file=sys.stderr)
        return 2
    print(f"demo_place_knowledge: {summary['pois']} POIs, {summary['areas']} areas, {summary['existing']} facts already in the table;"
          f" {summary['facts']} facts written to {args.out}; import them with:"
          f" python -m worker run --job place_knowledge --source {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
