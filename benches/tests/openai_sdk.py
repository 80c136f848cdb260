"""Drives a server with the official `openai` SDK and prints what it saw as JSON.

Usage: python openai_sdk.py BASE_URL MODEL
"""
import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

answer = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=6
)
chunks, text, usage = 0, "", None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=5,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices:
        chunks += 1
        text += chunk.choices[0].delta.content or ""
    if chunk.usage is not None:
        usage = chunk.usage
completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
embedding = client.embeddings.create(model=model, input=["a", "b"])
models = client.models.list()
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    not_found = None
except openai.NotFoundError as error:
    not_found = {"status": error.status_code, "message": error.message}

print(json.dumps({
    "chat": {"content": answer.choices[0].message.content, "finish": answer.choices[0].finish_reason,
             "completion_tokens": answer.usage.completion_tokens},
    "stream": {"chunks": chunks, "text": text, "completion_tokens": usage.completion_tokens if usage else None},
    "completion": {"text": completion.choices[0].text, "completion_tokens": completion.usage.completion_tokens},
    "embeddings": [len(e.embedding) for e in embedding.data],
    "models": [m.id for m in models.data],
    "not_found": not_found,
}))
