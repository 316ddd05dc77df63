"""Checks answers the api really gave against its OpenAPI document.

    conforms.py DOCUMENT ANSWERS

ANSWERS is a JSON list of {"method", "path" (the documented template),
"status", "media" (the Content-Type), "body" (parsed JSON)}. Each body must
be valid against the schema the document gives for that operation, status
and media type (JSON Schema 2020-12, formats checked). Exits 1 and lists
every failure otherwise.
"""

import json
import sys

from jsonschema import Draft202012Validator


def escape(token):
    return token.replace("~", "~0").replace("/", "~1")


def main(document_path, answers_path):
    with open(document_path) as f:
        document = json.load(f)
    with open(answers_path) as f:
        answers = json.load(f)
    failures = []
    for a in answers:
        where = f"{a['method'].upper()} {a['path']} -> {a['status']}"
        operation = document["paths"].get(a["path"], {}).get(a["method"])
        if operation is None:
            failures.append(f"{where}: not in the document")
            continue
        response = operation["responses"].get(str(a["status"]))
        if response is None:
            failures.append(f"{where}: status not documented")
            continue
        media = a["media"].split(";")[0].strip()
        if media not in response.get("content", {}):
            failures.append(f"{where}: media type {media} not documented")
            continue
        if "schema" not in response["content"][media]:
            continue
        # The document is the root schema, so that its
        # #/components/schemas references resolve.
        pointer = "/".join(
            escape(t)
            for t in ["paths", a["path"], a["method"], "responses", str(a["status"]),
                      "content", media, "schema"]
        )
        root = dict(document, **{"$ref": "#/" + pointer})
        validator = Draft202012Validator(
            root, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for error in validator.iter_errors(a["body"]):
            path = "/".join(str(p) for p in error.absolute_path)
            failures.append(f"{where}: at /{path}: {error.message}")
    for f in failures:
        print(f)
    print(f"{len(answers)} answers checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
