#!/usr/bin/env python3
"""Loads the analytics benchmark's data through the batch API (so every record is validated,
normalised and written with its history like any other): ACCOUNTS accounts, CONTACTS contacts,
ACTIVITIES activities, CASES cases and OPPORTUNITIES opportunities, spread over two years around
today. Writes the contacts' ids and phone numbers (national format, as a caller's number may
arrive) to files for the load driver.

    BASE_URL=http://127.0.0.1:18183 TOKEN=rpt_… OUT=/tmp/dir bench/analytics_data.py
"""
import datetime
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

BASE = urllib.parse.urlparse(os.environ["BASE_URL"])
TOKEN = os.environ["TOKEN"]
OUT = os.environ["OUT"]
ACCOUNTS = int(os.environ.get("ACCOUNTS", 100_000))
CONTACTS = int(os.environ.get("CONTACTS", 1_000_000))
ACTIVITIES = int(os.environ.get("ACTIVITIES", 5_000_000))
CASES = int(os.environ.get("CASES", 200_000))
OPPORTUNITIES = int(os.environ.get("OPPORTUNITIES", 200_000))
BATCH = 1000
WORKERS = int(os.environ.get("WORKERS", 2))
TODAY = datetime.date.today()
random.seed(7)


def day(offset):
    return (TODAY + datetime.timedelta(days=offset)).isoformat()


def post_all(entity, bodies):
    """Creates the records in batches over WORKERS connections; returns their ids in order."""
    chunks = [bodies[i:i + BATCH] for i in range(0, len(bodies), BATCH)]
    ids = [None] * len(chunks)
    lock = threading.Lock()
    next_chunk = [0]

    def worker():
        conn = http.client.HTTPConnection(BASE.hostname, BASE.port, timeout=600)
        while True:
            with lock:
                index = next_chunk[0]
                next_chunk[0] += 1
            if index >= len(chunks):
                return
            body = json.dumps({"records": chunks[index]})
            conn.request("POST", f"/api/v1/records/{entity}/batch", body,
                         {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            if response.status != 201:
                sys.exit(f"{entity} batch {index}: {response.status} {payload[:500]!r}")
            ids[index] = [record["id"] for record in json.loads(payload)["data"]]

    started = time.time()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(chunk is None for chunk in ids):
        sys.exit(f"{entity}: a batch failed")
    elapsed = time.time() - started
    print(json.dumps({"mode": "load", "entity": entity, "records": len(bodies),
                      "seconds": round(elapsed, 1), "per_second": round(len(bodies) / elapsed)}),
          flush=True)
    return [record_id for chunk in ids for record_id in chunk]


def generated(count, make):
    """Bodies made in slices, so that a slice is posted before the next is built."""
    return [make(i) for i in range(count)]


accounts = post_all("account", generated(ACCOUNTS, lambda i: {
    "name": f"Account {i}", "industry": random.choice(["manufacturing", "retail", "services", "technology"]),
    "size": random.choice(["small", "medium", "large"]), "phone": f"01{40_000_000 + i:08d}"}))

contact_phones = []


def contact(i):
    phone = f"06{10_000_000 + i:08d}"
    contact_phones.append(phone)
    return {"first_name": f"First{i}", "last_name": f"Last{i}", "email": f"c{i}@example.com",
            "phone": phone, "account": accounts[i % len(accounts)],
            "stage": random.choices(["lead", "customer", "churned"], [3, 6, 1])[0],
            "annual_value": round(random.lognormvariate(8, 1.2), 2),
            "recency": random.randint(1, 5), "frequency": random.randint(1, 5),
            "monetary": random.randint(1, 5), "tenure_days": random.randint(0, 3650)}


contacts = post_all("contact", generated(CONTACTS, contact))
with open(os.path.join(OUT, "contact_ids.txt"), "w") as f:
    f.write("\n".join(contacts) + "\n")
with open(os.path.join(OUT, "contact_phones.txt"), "w") as f:
    f.write("\n".join(contact_phones) + "\n")


def activity(i):
    offset = random.randint(-365, 60)
    status = "open" if offset >= 0 else random.choices(["done", "cancelled", "open"], [8, 1, 1])[0]
    return {"subject": f"Activity {i}", "type": random.choice(["call", "email", "meeting", "task"]),
            "status": status, "due_on": day(offset), "contact": random.choice(contacts)}


# Activities in slices of 500,000, so that the generator's memory stays small.
SLICE = 500_000
for start in range(0, ACTIVITIES, SLICE):
    post_all("activity", [activity(i) for i in range(start, min(ACTIVITIES, start + SLICE))])

post_all("case", generated(CASES, lambda i: {
    "subject": f"Case {i}", "status": random.choices(["open", "in_progress", "resolved", "closed"], [2, 1, 3, 4])[0],
    "priority": random.choice(["urgent", "high", "ordinary", "low"]), "opened_on": day(random.randint(-730, 0)),
    "contact": random.choice(contacts)}))

post_all("opportunity", generated(OPPORTUNITIES, lambda i: {
    "title": f"Deal {i}", "stage": random.choices(["prospecting", "proposal", "negotiation", "won", "lost"], [3, 2, 1, 2, 2])[0],
    "amount": {"amount": random.randint(1, 500) * 100, "currency": "EUR"},
    "expected_close": day(random.randint(-365, 180)), "contact": random.choice(contacts)}))
