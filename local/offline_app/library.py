"""The feature library: each feature is a plan entry, its section's HTML and its script.

A feature is selected by keywords of the idea (title, description, category) or by the
template; `requires` pulls in the features it builds on. `field` is an input the feature adds
to the add-entry form; `columns` are what it adds to the `entries` table. Lists are written as
space-separated words, and columns as "name type, name type".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from local.offline_app import sections
from local.offline_app.ideas import Idea, noun_for, plural

Priority = Literal["high", "medium", "low"]
Columns = tuple[tuple[str, str], ...]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _columns(text: str) -> Columns:
    pairs = (column.split() for column in text.split(","))
    return tuple((name, kind) for name, kind in pairs)


ENTRIES = _words("add-entry search-entries")
"""What every entry-based feature needs: a way to add entries, and the list."""
ENTRY_COLUMNS = _columns(
    "id uuid, user_id uuid, title text, notes text, done boolean, done_at timestamptz,"
    " created_at timestamptz"
)


@dataclass(frozen=True, slots=True)
class LibraryFeature:
    """One feature the offline provider can build."""

    key: str
    """The plan's feature key; the section carries it as data-feature."""
    text: str
    """The plan's feature text; {noun} and {nouns} are filled in."""
    priority: Priority
    notes: str
    """The plan's notes on it (same placeholders)."""
    module: str
    """The script implementing it: js/<module>.js."""
    section: str
    """The inner HTML of its section (see `sections`)."""
    keywords: tuple[str, ...] = ()
    """Word stems of the idea that select it (plain and saas apps)."""
    template: str | None = None
    """The template that selects it."""
    requires: tuple[str, ...] = ()
    """The features it builds on, added to any plan that lacks them."""
    field: str = ""
    """An input it adds to the add-entry form (`data-field`), as HTML."""
    columns: Columns = ()
    """The columns it adds to the entries table."""
    tables: tuple[tuple[str, Columns], ...] = ()
    """The tables of its own."""
    noun: str = ""
    """What an entry is called when this feature shaped the app."""
    wide: bool = False
    """Whether its section spans the page."""


BASE = (
    LibraryFeature(
        key="add-entry",
        text="Add a {noun} with a title and notes",
        priority="high",
        notes="The form at the top; other features add their fields to it.",
        module="entries",
        section=sections.ADD_ENTRY,
    ),
    LibraryFeature(
        key="search-entries",
        text="List and search {nouns}",
        priority="high",
        notes="Search matches the title, notes and any tags or destination.",
        module="entries",
        section=sections.SEARCH_ENTRIES,
        wide=True,
    ),
    LibraryFeature(
        key="complete-entries",
        text="Mark a {noun} done, or remove it",
        priority="medium",
        notes="Done and Remove on each item; remove every done one at once.",
        module="entries",
        section=sections.COMPLETE_ENTRIES,
        requires=ENTRIES,
    ),
    LibraryFeature(
        key="keep-entries",
        text="Keep {nouns} in the browser between visits",
        priority="medium",
        notes="localStorage, namespaced by the app; the entries table is planned for sync.",
        module="entries",
        section=sections.KEEP_ENTRIES,
        requires=ENTRIES,
    ),
)

EXTRAS = (
    LibraryFeature(
        key="meal-plan",
        text="Plan meals for the week: assign {nouns} to days, Monday to Sunday",
        priority="high",
        notes="A seven-day planner; each day holds any number of {nouns}.",
        module="meal-plan",
        section=sections.MEAL_PLAN,
        keywords=_words(
            "recipe meal food cook dinner lunch breakfast menu kitchen dish cuisine nutrition"
            " diet grocer"
        ),
        requires=ENTRIES,
        tables=(("meal_plan", _columns("id uuid, user_id uuid, entry_id uuid, weekday text")),),
        noun="recipe",
        wide=True,
    ),
    LibraryFeature(
        key="ingredient-tags",
        text="Tag {nouns} by ingredient and filter by one",
        priority="medium",
        notes="Ingredients typed comma separated; the filter lists every ingredient in use.",
        module="ingredient-tags",
        section=sections.INGREDIENT_TAGS,
        keywords=_words("recipe ingredient cook food meal dish kitchen pantry bake baking grocer"),
        requires=ENTRIES,
        field=sections.TAGS_FIELD,
        columns=_columns("tags text[]"),
        noun="recipe",
    ),
    LibraryFeature(
        key="shopping-list",
        text="Build a shopping list from the week's meals",
        priority="medium",
        notes="The ingredients of every {noun} planned this week, counted, with check boxes.",
        module="shopping-list",
        section=sections.SHOPPING_LIST,
        keywords=_words("recipe meal food grocer dinner cook shopping"),
        requires=(*ENTRIES, "meal-plan", "ingredient-tags"),
        tables=(("shopping_items", _columns("id uuid, user_id uuid, name text, checked boolean")),),
        noun="recipe",
    ),
    LibraryFeature(
        key="weekly-goal",
        text="Set a weekly goal and see this week's progress",
        priority="medium",
        notes="Counts {nouns} marked done since Monday.",
        module="weekly-goal",
        section=sections.WEEKLY_GOAL,
        keywords=_words(
            "fitness workout exercise gym training running runner jog yoga habit sport health"
            " cardio lifting swim cycling marathon"
        ),
        requires=(*ENTRIES, "complete-entries"),
        tables=(
            ("weekly_goals", _columns("id uuid, user_id uuid, target integer, week_start date")),
        ),
        noun="workout",
    ),
    LibraryFeature(
        key="running-total",
        text="Record amounts and show a running total",
        priority="high",
        notes="Amounts in cents; negative for money out. The ledger shows the total after each.",
        module="running-total",
        section=sections.RUNNING_TOTAL,
        keywords=_words(
            "finance financial budget expense money spend cost invoice saving income bill"
            " payment accounting wallet"
        ),
        requires=ENTRIES,
        field=sections.AMOUNT_FIELD,
        columns=_columns("amount_cents bigint"),
        noun="expense",
    ),
    LibraryFeature(
        key="due-dates",
        text="Give {nouns} due dates and order them soonest first",
        priority="high",
        notes="Open {nouns} by due date, undated after, done last; overdue ones are flagged.",
        module="due-dates",
        section=sections.DUE_DATES,
        keywords=_words("task todo chore deadline assignment homework productiv reminder errand"),
        requires=ENTRIES,
        field=sections.DUE_FIELD,
        columns=_columns("due_date date"),
        noun="task",
    ),
    LibraryFeature(
        key="destinations",
        text="Group {nouns} by destination",
        priority="medium",
        notes="Each {noun} may name a destination; the groups are sorted by name.",
        module="destinations",
        section=sections.DESTINATIONS,
        keywords=_words(
            "travel trip vacation holiday destination itinerary journey tour flight hotel visit"
        ),
        requires=ENTRIES,
        field=sections.DESTINATION_FIELD,
        columns=_columns("destination text"),
        noun="trip",
    ),
)

MARKETPLACE = (
    LibraryFeature(
        key="listings",
        text="Create, list and search listings; the local user owns theirs",
        priority="high",
        notes="Title, description and price; only the owner removes a listing.",
        module="listings",
        section=sections.LISTINGS,
        template="marketplace",
        tables=(
            (
                "listings",
                _columns(
                    "id uuid, owner_id uuid, title text, description text, price_cents bigint,"
                    " status text, created_at timestamptz"
                ),
            ),
        ),
        wide=True,
    ),
    LibraryFeature(
        key="bids",
        text="Bid on a listing; the highest bid is shown",
        priority="high",
        notes="No bids on your own listing; a bid must beat the highest.",
        module="bids",
        section=sections.BIDS,
        template="marketplace",
        requires=("listings",),
        tables=(
            (
                "bids",
                _columns(
                    "id uuid, user_id uuid, listing_id uuid, amount_cents bigint,"
                    " created_at timestamptz"
                ),
            ),
        ),
    ),
    LibraryFeature(
        key="orders",
        text="Buy a listing and see my orders",
        priority="high",
        notes="Buying at the listed price marks the listing sold.",
        module="orders",
        section=sections.ORDERS,
        template="marketplace",
        requires=("listings",),
        tables=(
            (
                "orders",
                _columns(
                    "id uuid, user_id uuid, listing_id uuid, seller_id uuid, amount_cents bigint,"
                    " created_at timestamptz"
                ),
            ),
        ),
    ),
    LibraryFeature(
        key="local-user",
        text="Switch between local users to sell and buy",
        priority="medium",
        notes="Without accounts yet, a name in the browser owns listings, bids and orders.",
        module="local-user",
        section=sections.LOCAL_USER,
        template="marketplace",
        tables=(
            ("profiles", _columns("id uuid, user_id uuid, name text, created_at timestamptz")),
        ),
    ),
)

SAAS = (
    LibraryFeature(
        key="pricing-plans",
        text="Choose a plan: Free, Pro or Team",
        priority="high",
        notes="Each plan has a price, a {noun} limit and seats.",
        module="pricing-plans",
        section=sections.PRICING_PLANS,
        template="saas",
        tables=(
            ("accounts", _columns("id uuid, owner_id uuid, name text, created_at timestamptz")),
            (
                "subscriptions",
                _columns(
                    "id uuid, account_id uuid, plan text, status text, started_at timestamptz"
                ),
            ),
        ),
        wide=True,
    ),
    LibraryFeature(
        key="team-members",
        text="Invite team members by email, or remove them",
        priority="medium",
        notes="Invitations stop at the plan's seats; the owner takes one.",
        module="team-members",
        section=sections.TEAM_MEMBERS,
        template="saas",
        requires=("pricing-plans",),
        tables=(
            (
                "members",
                _columns(
                    "id uuid, account_id uuid, user_id uuid, email text, role text,"
                    " invited_at timestamptz"
                ),
            ),
        ),
    ),
    LibraryFeature(
        key="usage-meter",
        text="Meter usage against the plan's limit",
        priority="medium",
        notes="{Nouns} used of the plan's limit; adding stops at the limit.",
        module="usage-meter",
        section=sections.USAGE_METER,
        template="saas",
        requires=(*ENTRIES, "pricing-plans"),
    ),
)

FEATURES = {f.key: f for f in (*BASE, *EXTRAS, *MARKETPLACE, *SAAS)}
"""Every library feature by key, in the order their scripts load."""

TITLE_NOUNS = dict(
    pair.split("=")
    for pair in _words(
        "recipe=recipe meal=meal dish=dish dinner=dinner food=recipe cook=recipe"
        " cooking=recipe workout=workout exercise=exercise fitness=workout gym=workout"
        " training=workout habit=habit run=run expense=expense budget=expense finance=expense"
        " money=expense bill=bill invoice=invoice task=task todo=task chore=chore errand=errand"
        " assignment=assignment trip=trip travel=trip vacation=trip holiday=trip journey=trip"
    )
)
"""Title words that name the entries ("AI Recipe App" → recipe)."""


def with_requirements(keys: Iterable[str]) -> list[str]:
    """`keys` in order, then any library feature they require and lack (transitively)."""
    out = list(dict.fromkeys(keys))
    at = 0
    while at < len(out):
        lib = FEATURES.get(out[at])
        for need in lib.requires if lib else ():
            if need not in out:
                out.append(need)
        at += 1
    return out


def app_noun(idea: Idea, template: str | None, keys: Iterable[str]) -> str:
    """What one entry (or listing) of the app with these feature keys is called."""
    if template == "marketplace":
        return "listing"
    nouns = [FEATURES[k].noun for k in keys if k in FEATURES and FEATURES[k].noun]
    return noun_for(idea, TITLE_NOUNS, nouns)


def noun_forms(noun: str) -> dict[str, str]:
    """The noun's forms, the placeholders of feature texts and sections."""
    many = plural(noun)
    return {"noun": noun, "nouns": many, "Noun": noun.capitalize(), "Nouns": many.capitalize()}
