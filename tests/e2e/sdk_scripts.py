"""The programs the OpenAI SDK scenarios run, one for each SDK, as plain user code would.

Arguments: MODE BASE_URL API_KEY ACCOUNT_ID IMAGE_PATH. `stream`: one
`responses.create(stream=True)` asking for an image, printing `EVENT <seq> <type> <size of
partial_image_b64>` for each event the moment it arrives (the fake holds the next event
until it has seen that line), `TEXT <answer>`, and the image written to IMAGE_PATH; exit 4
after an error inside the stream. `once`: a non-streaming call, printing `TEXT <answer>`.
An HTTP error: `ERROR <status> <content type> <body>` on stderr, exit 1.
"""

from __future__ import annotations

PY_SDK = r"""
import base64, sys
import openai

mode, base_url, api_key, account, image_path = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120,
                       default_headers={"chatgpt-account-id": account, "originator": "codex_cli_rs"})
request = dict(model="gpt-5.4", input="draw a test image", instructions="You are a test.", store=False)
try:
    if mode == "once":
        print("TEXT\t" + client.responses.create(**request).output_text, flush=True)
        sys.exit(0)
    failed = False
    tools = [{"type": "image_generation", "size": "1024x1024"}]
    for event in client.responses.create(**request, tools=tools, stream=True):
        size = len(getattr(event, "partial_image_b64", None) or "")
        print(f"EVENT\t{event.sequence_number}\t{event.type}\t{size}", flush=True)
        if event.type == "response.output_item.done" and event.item.type == "image_generation_call":
            with open(image_path, "wb") as out:
                out.write(base64.b64decode(event.item.result))
        elif event.type == "response.output_text.done":
            print("TEXT\t" + event.text, flush=True)
        elif event.type == "error":
            failed = True
            print(f"STREAM_ERROR\t{event.code}\t{event.message}", file=sys.stderr, flush=True)
        elif event.type == "response.failed":
            failed = True
    sys.exit(4 if failed else 0)
except openai.APIStatusError as exc:
    kind = exc.response.headers.get("content-type")
    print(f"ERROR\t{exc.status_code}\t{kind}\t{exc.response.text[:600]}", file=sys.stderr)
    sys.exit(1)
"""

JS_SDK = r"""
const fs = require("fs");
const [modulePath, mode, baseURL, apiKey, account, imagePath] = process.argv.slice(1);
const sdk = require(modulePath);
const OpenAI = sdk.OpenAI || sdk.default || sdk;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000,
  defaultHeaders: { "chatgpt-account-id": account, originator: "codex_cli_rs" } });
const request = { model: "gpt-5.4", input: "draw a test image", instructions: "You are a test.", store: false };
const say = (fd, line) => fs.writeSync(fd, line + "\n");  // written before the next await

async function main() {
  if (mode === "once") {
    say(1, "TEXT\t" + (await client.responses.create(request)).output_text);
    return 0;
  }
  let failed = false;
  const tools = [{ type: "image_generation", size: "1024x1024" }];
  for await (const event of await client.responses.create({ ...request, tools, stream: true })) {
    say(1, `EVENT\t${event.sequence_number}\t${event.type}\t${(event.partial_image_b64 || "").length}`);
    if (event.type === "response.output_item.done" && event.item.type === "image_generation_call") {
      fs.writeFileSync(imagePath, Buffer.from(event.item.result, "base64"));
    } else if (event.type === "response.output_text.done") {
      say(1, "TEXT\t" + event.text);
    } else if (event.type === "error") {
      failed = true;
      say(2, `STREAM_ERROR\t${event.code}\t${event.message}`);
    } else if (event.type === "response.failed") {
      failed = true;
    }
  }
  return failed ? 4 : 0;
}

main().then((code) => process.exit(code), (err) => {
  if (err && err.status) {
    const kind = err.headers && (err.headers.get ? err.headers.get("content-type") : err.headers["content-type"]);
    say(2, `ERROR\t${err.status}\t${kind}\t${String(err.message).slice(0, 600)}`);
    process.exit(1);
  }
  say(2, `STREAM_ERROR\t${err && err.message}`);
  process.exit(4);
});
"""
