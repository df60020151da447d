"""The HTML of each feature's section: static markup the feature's script fills in.

Placeholders ({noun}, {nouns}, {Noun}, {Nouns}, {fields}) take derived, HTML-escaped values;
the idea's own text never reaches these templates. The script finds its elements by
`data-part`, and the add form's extra inputs by `data-field`.
"""

from __future__ import annotations

ADD_ENTRY = """<h2>Add a {noun}</h2>
<form data-part="form">
  <input data-part="title" placeholder="{Noun} title" maxlength="200" aria-label="Title">
  <textarea data-part="notes" placeholder="Notes" maxlength="2000" aria-label="Notes"></textarea>
{fields}  <button type="submit">Add</button>
  <p class="message" data-part="message" hidden></p>
</form>"""

SEARCH_ENTRIES = """<h2>Your {nouns}</h2>
<input type="search" data-part="search" placeholder="Search {nouns}" aria-label="Search">
<ul class="items" data-part="list"></ul>
<p class="empty" data-part="empty">No {nouns} yet: add one above.</p>"""

COMPLETE_ENTRIES = """<h2>Done</h2>
<p data-part="progress">Nothing to do yet.</p>
<button type="button" data-part="clear">Remove done {nouns}</button>"""

KEEP_ENTRIES = """<h2>Saved in this browser</h2>
<p data-part="status"></p>
<button type="button" data-part="backup">Show a backup</button>
<textarea data-part="dump" readonly hidden aria-label="Backup"></textarea>"""

MEAL_PLAN = """<h2>Meal plan for the week</h2>
<p class="hint">Pick {nouns} for each day, Monday to Sunday.</p>
<div class="week" data-part="week"></div>
<button type="button" data-part="clear">Clear the week</button>"""

INGREDIENT_TAGS = """<h2>Ingredients</h2>
<label>Show {nouns} with <select data-part="filter" aria-label="Ingredient"></select></label>
<div class="chips" data-part="tags"></div>"""

SHOPPING_LIST = """<h2>Shopping list</h2>
<p class="hint">The ingredients of this week's meals.</p>
<ul class="checklist" data-part="items"></ul>
<p class="empty" data-part="empty">Plan meals that have ingredients to build the list.</p>"""

WEEKLY_GOAL = """<h2>Weekly goal</h2>
<label>{Nouns} per week <input type="number" min="1" max="100" data-part="target"></label>
<progress data-part="bar" max="100" value="0"></progress>
<p data-part="status"></p>"""

RUNNING_TOTAL = """<h2>Running total</h2>
<p class="total">Total: <strong data-part="total">0.00</strong></p>
<ol class="ledger" data-part="ledger"></ol>"""

DUE_DATES = """<h2>Due dates</h2>
<p class="hint">The list is ordered by due date, soonest first.</p>
<p data-part="next">Nothing due.</p>
<p data-part="overdue">Nothing overdue.</p>"""

DESTINATIONS = """<h2>By destination</h2>
<div class="groups" data-part="groups"></div>
<p class="empty" data-part="empty">Add {nouns} with a destination to group them.</p>"""

LOCAL_USER = """<h2>Who is using this browser</h2>
<p>Signed in as <strong data-part="current"></strong></p>
<form class="row" data-part="form">
  <input data-part="name" placeholder="Switch to another name" maxlength="60" aria-label="Name">
  <button type="submit">Switch</button>
</form>
<div class="actions" data-part="users"></div>"""

LISTINGS = """<h2>Listings</h2>
<form data-part="form">
  <input data-part="title" placeholder="What are you selling?" maxlength="200" aria-label="Title">
  <input data-part="price" inputmode="decimal" placeholder="Price, e.g. 25.00" aria-label="Price">
  <textarea data-part="description" placeholder="Description" maxlength="2000"
    aria-label="Description"></textarea>
  <button type="submit">List it</button>
  <p class="message" data-part="message" hidden></p>
</form>
<input type="search" data-part="search" placeholder="Search listings" aria-label="Search">
<ul class="items" data-part="list"></ul>
<p class="empty" data-part="empty">No listings yet.</p>"""

BIDS = """<h2>My bids</h2>
<p class="message" data-part="message" hidden></p>
<ul class="items" data-part="mine"></ul>
<p class="empty" data-part="empty">Bid on someone else's listing: the highest bid leads.</p>"""

ORDERS = """<h2>My orders</h2>
<p class="message" data-part="message" hidden></p>
<ul class="items" data-part="mine"></ul>
<p class="empty" data-part="empty">Nothing bought yet.</p>
<p>Spent: <strong data-part="total">0.00</strong></p>"""

PRICING_PLANS = """<h2>Plans and pricing</h2>
<div class="plans" data-part="plans"></div>
<p class="message" data-part="message" hidden></p>"""

TEAM_MEMBERS = """<h2>Team</h2>
<form class="row" data-part="form">
  <input type="email" data-part="email" placeholder="Invite by email" aria-label="Email">
  <button type="submit">Invite</button>
</form>
<p class="message" data-part="message" hidden></p>
<ul class="items" data-part="list"></ul>
<p data-part="seats"></p>"""

USAGE_METER = """<h2>Usage</h2>
<progress data-part="bar" max="100" value="0"></progress>
<p data-part="status"></p>"""

NOTES = """<h2>{heading}</h2>
<form class="row" data-part="form">
  <input data-part="text" placeholder="Add a note" maxlength="500" aria-label="Note">
  <button type="submit">Add</button>
</form>
<ul class="items" data-part="list"></ul>
<p class="empty" data-part="empty">Nothing here yet.</p>"""

TAGS_FIELD = (
    '  <input data-field="tags" placeholder="Ingredients, comma separated"'
    ' aria-label="Ingredients">\n'
)
AMOUNT_FIELD = (
    '  <input data-field="amount_cents" inputmode="decimal"'
    ' placeholder="Amount, e.g. 12.50 or -3" aria-label="Amount">\n'
)
DUE_FIELD = '  <input type="date" data-field="due_date" aria-label="Due date">\n'
DESTINATION_FIELD = (
    '  <input data-field="destination" placeholder="Destination" maxlength="80"'
    ' aria-label="Destination">\n'
)
