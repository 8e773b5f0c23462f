"""Drives Vigil's MCP server with the official MCP Python SDK (`mcp`, pinned 2.3.0), as an agent
host would: over stdio (`vigil mcp --target URL`, one server per agent) or over streamable HTTP
(`POST /mcp` on `vigil serve`), in both of the SDK's connection modes — `legacy` (the initialize
handshake today's hosts use) and `auto` (probe the stateless protocol, fall back to initialize).

Run by tests/suite/mcp_python.rs against a `vigil serve` it started on loopback:

    python sortie_flow.py SCENARIO --transport stdio --vigil PATH --target http://127.0.0.1:P [--token T]
    python sortie_flow.py SCENARIO --transport http --url http://127.0.0.1:P/mcp [--token T]

Prints one JSON line on stdout — `{"ok", "scenario", "transport", "sdk", "modes": {mode: …}}`,
what each mode observed (or the assertion that failed in it, under "error") — and exits non-zero
when any mode failed. Uses only the SDK (and httpx2, its HTTP client, for the bearer token).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import sys
import time
import traceback
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS

MODES = ("legacy", "auto")

SORTIE_TOOLS = {
    "heartbeat": ["step_id", "extend_leases_sec", "claim_token"],
    "complete_step": ["step_id", "summary", "claim_token"],
    "fail_step": ["step_id", "error", "claim_token"],
    "get_my_context": ["step_id"],
    "read_step_output": ["step_id", "offset", "limit", "field"],
}
VIGIL_TOOLS = {
    "register": ["instance_id", "roles", "ttl_ms"],
    "claim_step": ["worker_id", "max_tasks"],
    "create_task": ["text", "payload", "priority", "max_attempts", "requires_locks", "request_id"],
    "acquire_lease": ["key", "mode", "ttl_sec", "holder", "step_id", "claim_token"],
    "renew_lease": ["key", "ttl_sec", "holder", "step_id", "claim_token"],
    "release_lease": ["key", "holder", "step_id", "claim_token"],
    "list_leases": ["prefix", "limit"],
    "cluster_state": ["limit"],
}

# Every call and every mode is bounded: a hung server fails the script, never the suite's clock.
CALL_TIMEOUT_S = 5.0
MODE_TIMEOUT_S = 20.0


class Check(AssertionError):
    pass


def check(condition: bool, what: str, observed: Any = None) -> None:
    if not condition:
        raise Check(f"{what}; observed: {json.dumps(observed, default=str)}")


class Session:
    """One MCP client connection, with the tool calls the scenarios need."""

    def __init__(self, client: Client, mode: str):
        self.client = client
        self.mode = mode

    async def raw(self, tool: str, **arguments: Any):
        """The CallToolResult of a call (the SDK has validated it against the tool's
        outputSchema unless it is an error)."""
        return await self.client.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT_S)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The structured result of a call that must succeed; its text block holds the same
        JSON."""
        result = await self.raw(tool, **arguments)
        text = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
        check(not result.is_error, f"{tool}({arguments}) is not an error", text)
        structured = result.structured_content
        check(isinstance(structured, dict), f"{tool}: structuredContent is an object", structured)
        check(json.loads(text) == structured, f"{tool}: the text block holds the structured JSON", text)
        return structured

    async def tool_error(self, tool: str, **arguments: Any) -> str:
        """The text of a call that must come back as a tool error (isError), not a transport
        failure."""
        result = await self.raw(tool, **arguments)
        text = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
        check(result.is_error is True, f"{tool}({arguments}) is a tool error", text)
        check(result.structured_content is None, f"{tool}: no structuredContent on an error", text)
        return text


class Transport:
    def __init__(self, args: argparse.Namespace):
        self.args = args

    def name(self) -> str:
        return self.args.transport

    @contextlib.asynccontextmanager
    async def connect(self, mode: str, env: dict[str, str] | None = None):
        args = self.args
        if args.transport == "stdio":
            argv = ["mcp", "--target", args.target]
            if args.token:
                argv += ["--token", args.token]
            params = StdioServerParameters(command=args.vigil, args=argv, env=env)
            async with Client(params, mode=mode, read_timeout_seconds=CALL_TIMEOUT_S) as client:
                yield Session(client, mode)
        else:
            check(env is None, "no environment over HTTP")
            if args.token:
                # `Client(url)` takes no headers: the bearer token goes through the transport's
                # own HTTP client.
                async with httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {args.token}"},
                    timeout=httpx2.Timeout(CALL_TIMEOUT_S),
                ) as http:
                    transport = streamable_http_client(args.url, http_client=http)
                    async with Client(transport, mode=mode, read_timeout_seconds=CALL_TIMEOUT_S) as client:
                        yield Session(client, mode)
            else:
                async with Client(args.url, mode=mode, read_timeout_seconds=CALL_TIMEOUT_S) as client:
                    yield Session(client, mode)


def schema_properties(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    return set((schema.get("properties") or {}).keys())


# ---------------------------------------------------------------------------------------------
# Scenarios: each takes the transport and a mode, returns what it observed (JSON).


async def scenario_tools(t: Transport, mode: str, _opts: dict[str, Any]) -> dict[str, Any]:
    """tools/list holds Sortie's and Vigil's tools, each with a description, an input schema
    naming the documented arguments and an output schema; a call is validated against it."""
    async with t.connect(mode) as s:
        listed = await s.client.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        for name, arguments in {**SORTIE_TOOLS, **VIGIL_TOOLS}.items():
            check(name in tools, f"tools/list has {name}", sorted(tools))
            tool = tools[name]
            check(bool(tool.description), f"{name} has a description")
            check(tool.input_schema.get("type") == "object", f"{name}: input schema is an object", tool.input_schema)
            missing = set(arguments) - schema_properties(tool.input_schema)
            check(not missing, f"{name}: input schema names {sorted(missing)}", tool.input_schema)
            check(
                isinstance(tool.output_schema, dict) and tool.output_schema.get("type") == "object",
                f"{name}: output schema is an object",
                tool.output_schema,
            )
        version = s.client.protocol_version
        era = "handshake" if version in HANDSHAKE_PROTOCOL_VERSIONS else "modern"
        check(mode == "auto" or era == "handshake", "legacy mode used the initialize handshake", version)
        state = await s.call("cluster_state", limit=10)
        check("instances" in state and "task_counts" in state, "cluster_state's shape", state)
        return {
            "tools": sorted(tools),
            "with_output_schema": sorted(n for n, tool in tools.items() if tool.output_schema),
            "protocol_version": version,
            "era": era,
        }


async def scenario_flow(t: Transport, mode: str, _opts: dict[str, Any]) -> dict[str, Any]:
    """A whole Sortie step through the tools: register, create a task with a lock, claim it,
    heartbeat with and without leases, read the context, complete (again: idempotent, the first
    summary stays), read the output. Then a failure is retried and the retry completes."""
    worker = f"agent-{t.name()}-{mode}"
    key = f"file:flow-{t.name()}-{mode}.tex"
    out: dict[str, Any] = {}
    async with t.connect(mode) as s:
        reg = await s.call("register", instance_id=worker, roles=["worker"])
        check(reg.get("registered") is True and reg.get("id") == worker, "register", reg)
        task = await s.call("create_task", text=f"write chapter 1 ({mode})", requires_locks=[key], priority=70)
        step = task.get("step_id")
        check(isinstance(step, int) and task.get("id") == f"t-{step}", "create_task: step_id N and id t-N", task)
        out["step_id"] = step

        claim = await s.call("claim_step", worker_id=worker)
        check(claim.get("claimed") is True and claim.get("step_id") == step, "claim_step claims the task", claim)
        token = claim.get("claim_token")
        check(isinstance(token, str) and token, "claim_step: a claim token", claim)
        lease_keys = [lease.get("key") for lease in claim.get("leases", [])]
        check(key in lease_keys, "claim_step: the task's lock is leased", claim)

        now_ms = time.time() * 1000
        hb = await s.call("heartbeat", step_id=step, claim_token=token, extend_leases_sec=900)
        check(hb.get("status") == "ok" and hb.get("step_id") == step, "heartbeat with leases", hb)
        check(hb.get("lost_leases") == [], "heartbeat: no lost lease", hb)
        expires = hb.get("leases_expire_at_ms")
        check(
            isinstance(expires, int) and now_ms + 850_000 < expires < now_ms + 950_000,
            "heartbeat: leases moved to now + 900 s",
            hb,
        )
        hb0 = await s.call("heartbeat", step_id=step, claim_token=token, extend_leases_sec=0)
        check(hb0.get("status") == "ok" and hb0.get("step_id") == step, "heartbeat only (0)", hb0)
        out["heartbeats"] = [hb["status"], hb0["status"]]

        ctx = await s.call("get_my_context", step_id=step)
        check(ctx.get("step_id") == step and ctx.get("id") == f"t-{step}", "get_my_context: the task", ctx)
        check(ctx.get("status") == "in_progress" and ctx.get("assigned_to") == worker, "get_my_context: claimed", ctx)
        check(token not in json.dumps(ctx), "get_my_context never shows a claim token", ctx)
        out["context_status"] = ctx["status"]

        done = await s.call("complete_step", step_id=step, claim_token=token, summary="chapter 1 written")
        check(done.get("status") == "done" and done.get("step_id") == step, "complete_step: done", done)
        # docs/work.md: completing again with the same token is idempotent (a retried call) and
        # changes nothing; the result stays the first summary (checked below and over JSON-RPC).
        again = await s.call("complete_step", step_id=step, claim_token=token, summary="again")
        check(again.get("status") == "done" and again.get("step_id") == step, "completion is idempotent", again)
        stale = await s.call("heartbeat", step_id=step, claim_token=token)
        check(stale.get("status") == "stale_claim", "a heartbeat after completion is stale", stale)
        out["complete"] = [done["status"], again["status"], stale["status"]]

        output = await s.call("read_step_output", step_id=step)
        check(
            output.get("content") == "chapter 1 written"
            and output.get("total_length") == len("chapter 1 written")
            and output.get("has_more") is False,
            "read_step_output: the summary",
            output,
        )
        part = await s.call("read_step_output", step_id=step, offset=8, limit=1)
        check(part.get("content") == "1" and part.get("has_more") is True, "read_step_output: a slice", part)

        failing = await s.call("create_task", text=f"flaky ({mode})", max_attempts=3)
        claim = await s.call("claim_step", worker_id=worker)
        check(claim.get("step_id") == failing["step_id"], "claim_step claims the flaky task", claim)
        failed = await s.call("fail_step", step_id=failing["step_id"], claim_token=claim["claim_token"], error="boom")
        check(
            failed.get("status") == "pending" and failed.get("can_retry") is True,
            "fail_step: retried",
            failed,
        )
        check(failed.get("retry_count") == 1 and failed.get("max_retries") == 3, "fail_step: counts", failed)
        spent = await s.call("heartbeat", step_id=failing["step_id"], claim_token=claim["claim_token"])
        check(spent.get("status") == "stale_claim", "the failed claim's token is spent", spent)
        # The retry: claimed again with a fresh token, then completed (no task is left pending).
        retry = await s.call("claim_step", worker_id=worker)
        check(
            retry.get("step_id") == failing["step_id"] and retry.get("claim_token") != claim["claim_token"],
            "the failed task is claimed again, with a fresh token",
            retry,
        )
        done = await s.call("complete_step", step_id=retry["step_id"], claim_token=retry["claim_token"])
        check(done.get("status") == "done", "the retry completes", done)
        out["fail"] = failed["status"]
        out["flaky_step_id"] = failing["step_id"]
    return out


async def scenario_runner(t: Transport, mode: str, opts: dict[str, Any]) -> dict[str, Any]:
    """A step a runner claimed over JSON-RPC (`task.claim`), worked by the agent through MCP:
    over stdio its step and token come from SORTIE_STEP_ID / SORTIE_CLAIM_TOKEN (an explicit
    argument wins), over HTTP as arguments. `claims` maps each mode, and "extra", to
    `{"step_id", "claim_token"}`."""
    claims = opts["claims"]
    mine = claims[mode]
    other = claims["extra"]  # a third claimed step, never completed here
    step_arg = mine["step_id"]  # as the runner gave it: "t-N", "N" or N
    out: dict[str, Any] = {}
    if t.name() == "stdio":
        env = {"SORTIE_STEP_ID": str(step_arg), "SORTIE_CLAIM_TOKEN": mine["claim_token"]}
        async with t.connect(mode, env=env) as s:
            hb = await s.call("heartbeat")
            step = hb.get("step_id")
            check(hb.get("status") == "ok" and isinstance(step, int), "heartbeat from the environment", hb)
            hb0 = await s.call("heartbeat", extend_leases_sec=0)
            check(hb0.get("status") == "ok" and hb0.get("step_id") == step, "heartbeat only, from env", hb0)
            ctx = await s.call("get_my_context")
            check(ctx.get("step_id") == step and ctx.get("status") == "in_progress", "context from env", ctx)
            # An explicit argument wins over the environment: a wrong token is stale even though
            # the environment holds the right one; another step's id and token act on that step.
            wrong = await s.call("heartbeat", claim_token="not-the-claim-token")
            check(wrong.get("status") == "stale_claim", "an explicit token wins over the env's", wrong)
            theirs = await s.call("heartbeat", step_id=other["step_id"], claim_token=other["claim_token"])
            check(
                theirs.get("status") == "ok" and theirs.get("step_id") != step,
                "an explicit step_id wins over the env's",
                theirs,
            )
            out["explicit_step_id"] = theirs["step_id"]
            done = await s.call("complete_step", summary=f"done by the {mode} agent")
            check(done.get("status") == "done" and done.get("step_id") == step, "complete_step from env", done)
            late = await s.call("heartbeat")
            check(late.get("status") == "stale_claim", "a heartbeat after completion is stale", late)
    else:
        async with t.connect(mode) as s:
            token = mine["claim_token"]
            hb = await s.call("heartbeat", step_id=step_arg, claim_token=token, extend_leases_sec=900)
            step = hb.get("step_id")
            check(hb.get("status") == "ok" and isinstance(step, int), "heartbeat with leases", hb)
            hb0 = await s.call("heartbeat", step_id=step_arg, claim_token=token, extend_leases_sec=0)
            check(hb0.get("status") == "ok" and hb0.get("step_id") == step, "heartbeat only", hb0)
            ctx = await s.call("get_my_context", step_id=step_arg)
            check(ctx.get("step_id") == step and ctx.get("status") == "in_progress", "get_my_context", ctx)
            no_env = await s.tool_error("complete_step", step_id=step_arg)
            check("claim_token" in no_env, "no env fallback over HTTP: claim_token is required", no_env)
            done = await s.call("complete_step", step_id=step_arg, claim_token=token, summary=f"done by the {mode} agent")
            check(done.get("status") == "done" and done.get("step_id") == step, "complete_step", done)
            late = await s.call("heartbeat", step_id=step_arg, claim_token=token)
            check(late.get("status") == "stale_claim", "a heartbeat after completion is stale", late)
    out["step_id"] = step
    out["statuses"] = [hb["status"], hb0["status"], done["status"], late["status"]]
    return out


async def scenario_dead_agent(t: Transport, mode: str, opts: dict[str, Any]) -> dict[str, Any]:
    """An agent claims and heartbeats its step for 1.5 TTLs of its instance, which its step
    heartbeats keep alive (no instance heartbeat: a short-lived runner registered it); then it
    dies: its instance expires after its TTL, the step is taken back and claimed by another
    worker; the dead agent's late heartbeat, completion and failure are stale_claim and change
    nothing."""
    ttl_ms = int(opts["ttl_ms"])
    dead = f"dead-{t.name()}-{mode}"
    live = f"live-{t.name()}-{mode}"
    async with t.connect(mode) as s:
        await s.call("register", instance_id=live, roles=["worker"])
        task = await s.call("create_task", text=f"long job ({mode})", max_attempts=3)
        # Registered last, just before it claims: its TTL runs from here.
        await s.call("register", instance_id=dead, roles=["worker"], ttl_ms=ttl_ms)
        step = task["step_id"]
        claim = await s.call("claim_step", worker_id=dead)
        check(claim.get("claimed") is True and claim.get("step_id") == step, "the doomed agent claims", claim)
        dead_token = claim["claim_token"]
        # While it heartbeats its step (every quarter of a TTL, for 1.5 TTLs) its instance stays
        # alive through the step heartbeats alone, and the step stays its own.
        beats = 0
        alive_until = time.monotonic() + 1.5 * ttl_ms / 1000
        while time.monotonic() < alive_until:
            hb = await s.call("heartbeat", step_id=step, claim_token=dead_token)
            check(hb.get("status") == "ok", "a heartbeat of the live agent", hb)
            beats += 1
            await asyncio.sleep(ttl_ms / 4000)
        held = await s.call("claim_step", worker_id=live)
        check(held.get("claimed") is False, "step heartbeats kept the claim past the TTL", held)
        # Taken before the last heartbeat is sent: the server counts the TTL from when it
        # handled it, which is later, so the wait measured below cannot undercut the TTL.
        died_at = time.monotonic()
        hb = await s.call("heartbeat", step_id=step, claim_token=dead_token)
        check(hb.get("status") == "ok", "its last heartbeat", hb)

        # Bounded: the instance expires after its TTL, the next sweep takes the claim back.
        deadline = died_at + float(opts.get("wait_s", 5.0))
        polls = 0
        taken = None
        while time.monotonic() < deadline:
            polls += 1
            attempt = await s.call("claim_step", worker_id=live)
            if attempt.get("claimed"):
                taken = attempt
                break
            await asyncio.sleep(0.05)
        check(taken is not None, f"the step is taken back within {opts.get('wait_s', 5.0)} s", polls)
        waited_ms = int((time.monotonic() - died_at) * 1000)
        check(taken.get("step_id") == step, "the live worker claims the dead agent's step", taken)
        check(waited_ms >= ttl_ms, "not taken back before a TTL after the last heartbeat", waited_ms)
        live_token = taken["claim_token"]
        check(live_token != dead_token, "a fresh claim token", taken)

        late_hb = await s.call("heartbeat", step_id=step, claim_token=dead_token)
        late_done = await s.call("complete_step", step_id=step, claim_token=dead_token, summary="zombie")
        late_fail = await s.call("fail_step", step_id=step, claim_token=dead_token, error="zombie")
        statuses = [late_hb.get("status"), late_done.get("status"), late_fail.get("status")]
        check(statuses == ["stale_claim"] * 3, "the dead agent's late calls are stale", statuses)
        ctx = await s.call("get_my_context", step_id=step)
        check(
            ctx.get("assigned_to") == live and ctx.get("status") == "in_progress" and ctx.get("result") is None,
            "the late calls changed nothing",
            ctx,
        )
        # docs/work.md: each failure report and each take-back counts one attempt.
        check(ctx.get("attempts") == 1, "the take-back counted an attempt", ctx)
        check(dead in str(ctx.get("error")), "the task's error names the expired instance", ctx)
        state = await s.call("cluster_state")
        ids = [i.get("id") for i in state.get("instances", [])]
        check(dead not in ids and live in ids, "the dead agent left the cluster", ids)
        done = await s.call("complete_step", step_id=step, claim_token=live_token, summary="finished")
        check(done.get("status") == "done", "the live worker completes", done)
        return {
            "step_id": step,
            "beats": beats,
            "late": statuses,
            "waited_ms": waited_ms,
            "polls": polls,
            "attempts": ctx["attempts"],
        }


async def scenario_locks(t: Transport, mode: str, _opts: dict[str, Any]) -> dict[str, Any]:
    """Hierarchical keys with Sortie's `§`: `file:ch01.tex` held exclusively blocks claiming a
    task that requires `file:ch01.tex§PLXDX`; once released it is claimable; a sibling
    `file:ch01.tex§OTHER` does not conflict with it."""
    parent = f"file:ch01-{t.name()}-{mode}.tex"
    child, sibling = f"{parent}§PLXDX", f"{parent}§OTHER"
    holder, worker = f"editor-{t.name()}-{mode}", f"writer-{t.name()}-{mode}"
    out: dict[str, Any] = {}
    async with t.connect(mode) as s:
        await s.call("register", instance_id=holder, roles=["worker"])
        await s.call("register", instance_id=worker, roles=["worker"])
        held = await s.call("acquire_lease", key=parent, mode="exclusive", holder=holder)
        check(held.get("acquired") is True, "the editor holds the chapter", held)
        denied = await s.call("acquire_lease", key=child, mode="exclusive", holder=worker)
        check(denied.get("acquired") is False and denied.get("conflicts"), "a descendant key conflicts", denied)

        task = await s.call("create_task", text=f"fix PLXDX ({mode})", requires_locks=[child])
        blocked = await s.call("claim_step", worker_id=worker)
        check(blocked.get("claimed") is False, "a held ancestor blocks the claim", blocked)
        released = await s.call("release_lease", key=parent, holder=holder)
        check(released.get("released") is True, "the editor releases the chapter", released)
        claim = await s.call("claim_step", worker_id=worker)
        check(claim.get("claimed") is True and claim.get("step_id") == task["step_id"], "then it is claimed", claim)
        check(child in [lease.get("key") for lease in claim.get("leases", [])], "with its lease", claim)

        other = await s.call("create_task", text=f"fix OTHER ({mode})", requires_locks=[sibling])
        sib = await s.call("claim_step", worker_id=holder)
        check(
            sib.get("claimed") is True and sib.get("step_id") == other["step_id"],
            "a sibling key does not conflict",
            sib,
        )
        parent_now = await s.call("acquire_lease", key=parent, mode="exclusive", holder=holder)
        check(parent_now.get("acquired") is False, "the parent conflicts with its held children", parent_now)
        listed = await s.call("list_leases", prefix=parent)
        keys = sorted(lease.get("key") for lease in listed.get("leases", []))
        check(keys == sorted([child, sibling]), "list_leases: both children", listed)
        for c in (claim, sib):
            done = await s.call("complete_step", step_id=c["step_id"], claim_token=c["claim_token"])
            check(done.get("status") == "done", "complete", done)
        out.update(blocked=blocked["claimed"], sibling_claimed=sib["claimed"], leases=keys)
    return out


async def scenario_bad_args(t: Transport, mode: str, _opts: dict[str, Any]) -> dict[str, Any]:
    """Bad arguments come back as tool errors naming the argument, not transport failures; the
    session stays usable after them."""
    worker = f"careless-{t.name()}-{mode}"
    async with t.connect(mode) as s:
        await s.call("register", instance_id=worker, roles=["worker"])
        await s.call("create_task", text=f"anything ({mode})")
        claim = await s.call("claim_step", worker_id=worker)
        step = claim["step_id"]
        errors = {
            "step_id_abc": await s.tool_error("heartbeat", step_id="abc", claim_token=claim["claim_token"]),
            "no_claim_token": await s.tool_error("complete_step", step_id=step, summary="x"),
            "no_step_id": await s.tool_error("read_step_output"),
            "negative_offset": await s.tool_error("read_step_output", step_id=step, offset=-1),
        }
        check("step_id" in errors["step_id_abc"], "step_id 'abc' names step_id", errors["step_id_abc"])
        check("claim_token" in errors["no_claim_token"], "a missing token names claim_token", errors["no_claim_token"])
        check("step_id" in errors["no_step_id"], "a missing step_id names step_id", errors["no_step_id"])
        check("offset" in errors["negative_offset"], "a negative offset names offset", errors["negative_offset"])
        # Nothing happened to the step; the connection still works.
        ctx = await s.call("get_my_context", step_id=step)
        check(ctx.get("status") == "in_progress", "the step is untouched", ctx)
        done = await s.call("complete_step", step_id=step, claim_token=claim["claim_token"])
        check(done.get("status") == "done", "the session still works", done)
        return {"errors": errors, "step_id": step}


def describe(e: BaseException) -> str:
    """The failure in one line: an exception group (anyio's task groups wrap transport errors
    in them) by its leaves."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(leaf) for leaf in e.exceptions)
    return f"{type(e).__name__}: {e}"


SCENARIOS = {
    "tools": scenario_tools,
    "flow": scenario_flow,
    "runner": scenario_runner,
    "dead_agent": scenario_dead_agent,
    "locks": scenario_locks,
    "bad_args": scenario_bad_args,
}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--vigil", help="the vigil binary (stdio)")
    parser.add_argument("--target", help="vigil serve's base URL (stdio)")
    parser.add_argument("--url", help="the /mcp URL (http)")
    parser.add_argument("--token", help="bearer token")
    parser.add_argument("--modes", default=",".join(MODES), help="client modes, comma-separated")
    parser.add_argument("--opts", default="{}", help="scenario options, a JSON object")
    args = parser.parse_args()
    if args.transport == "stdio" and not (args.vigil and args.target):
        parser.error("stdio needs --vigil and --target")
    if args.transport == "http" and not args.url:
        parser.error("http needs --url")

    transport = Transport(args)
    opts = json.loads(args.opts)
    scenario = SCENARIOS[args.scenario]
    report: dict[str, Any] = {
        "ok": True,
        "scenario": args.scenario,
        "transport": args.transport,
        "sdk": importlib.metadata.version("mcp"),
        "modes": {},
    }
    for mode in args.modes.split(","):
        started = time.monotonic()
        try:
            with_timeout = asyncio.wait_for(scenario(transport, mode, opts), MODE_TIMEOUT_S)
            observed = await with_timeout
            observed["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        except Exception as e:  # noqa: BLE001 — every failure is reported, per mode
            report["ok"] = False
            observed = {"error": describe(e)}
            print(f"--- {args.scenario} over {args.transport}, mode {mode}:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        report["modes"][mode] = observed
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
