"""The Hardhat dev chain: start and stop a node, deploy Uniswap V2 with two ERC-20s, record it all.

Contracts come from the npm packages' compiled artifacts (WETH9, UniswapV2Factory, UniswapV2Router02,
OpenZeppelin's ERC20PresetMinterPauser for the 18-decimal token) and from devchain/contracts
compiled with the solc npm package (the 6-decimal token: OpenZeppelin's build fixes 18 decimals).
Deployment is idempotent: whatever is recorded and still has code on the chain is left alone.

Epochs: Hardhat keeps its chain in memory, so a restarted node is a new chain from block 0 while the
database remembers the old one. `dev_chain_epoch` (run by `devchain up` before deploying) sees that
the node's early blocks differ from the recorded ones and starts a new epoch for that dev chain:
the old chain's headers and reorg records are archived, its trades get an audit event (the open
ones end FAILED) and are neither watched nor counted by health, and the chain's nonce cursors
restart. A chain that is not a dev chain is never reset this way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from web3 import Web3

from apps.chain.epochs import anchor_record
from apps.chain.models import Chain, Dex, Pair, RpcEndpoint, Token
from apps.chain.rpc import RpcError, chain_id_of

logger = logging.getLogger(__name__)

DEVCHAIN_DIR = settings.BASE_DIR / "devchain"
NODE_MODULES = DEVCHAIN_DIR / "node_modules"
ARTIFACTS = {
    "WETH9": NODE_MODULES / "@uniswap/v2-periphery/build/WETH9.json",
    "UniswapV2Factory": NODE_MODULES / "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": NODE_MODULES / "@uniswap/v2-core/build/UniswapV2Pair.json",
    "UniswapV2Router02": NODE_MODULES / "@uniswap/v2-periphery/build/UniswapV2Router02.json",
    "ERC20PresetMinterPauser": NODE_MODULES
    / "@openzeppelin/contracts/build/contracts/ERC20PresetMinterPauser.json",
    "DevToken": DEVCHAIN_DIR / "build/DevToken.json",
}
MAX_UINT = 2**256 - 1
# Dev accounts 1..FUNDED_ACCOUNTS get tokens; account 0 deploys and provides liquidity.
FUNDED_ACCOUNTS = 5
FUND_AMOUNT_UNITS = 1_000_000


@dataclass(frozen=True)
class TokenSpec:
    symbol: str
    name: str
    decimals: int
    artifact: str


DEV_TOKENS = (
    TokenSpec("dUSDC", "Dev USD Coin", 6, "DevToken"),
    TokenSpec("dDAI", "Dev Dai", 18, "ERC20PresetMinterPauser"),
)
# (token a, token b or None for WETH, whole units of a, whole units of b / ETH)
DEV_LIQUIDITY = (
    ("dDAI", "dUSDC", 1_000_000, 1_000_000),
    ("dUSDC", None, 300_000, 100),
    ("dDAI", None, 300_000, 100),
)


def devchain_url(port: int | None = None) -> str:
    return f"http://{settings.DEVCHAIN_HOST}:{port or settings.DEVCHAIN_PORT}"


def load_artifact(name: str) -> dict:
    path = ARTIFACTS[name]
    if name == "DevToken" and not path.exists():
        compile_contracts()
    data = json.loads(path.read_text())
    bytecode = data["bytecode"] if isinstance(data["bytecode"], str) else data["bytecode"]["object"]
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    return {"abi": data["abi"], "bytecode": bytecode}


def compile_contracts() -> None:
    subprocess.run(  # noqa: S603 - fixed argv
        ["node", "scripts/compile.js"],  # noqa: S607 - node from PATH, as npm uses it
        cwd=DEVCHAIN_DIR,
        check=True,
        capture_output=True,
    )


# --- the node process --------------------------------------------------------------------------


def node_answers(url: str) -> int | None:
    """The chain id the node at `url` reports, or None if nothing answers."""
    try:
        return chain_id_of(url, timeout=1.0)
    except RpcError:
        return None


def node_start(*, port: int, block_ms: int, pid_file: Path, log_file: Path, wait: float = 60) -> int:
    """Start a Hardhat node in its own session; returns its PID once it answers JSON-RPC."""
    hardhat = NODE_MODULES / ".bin" / "hardhat"
    if not hardhat.exists():
        raise RuntimeError(f"{hardhat} is missing: run `npm ci` in devchain/ (make bootstrap)")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "DEVCHAIN_BLOCK_MS": str(block_ms),
        "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
    }
    with open(log_file, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(hardhat), "node", "--hostname", settings.DEVCHAIN_HOST, "--port", str(port)],
            cwd=DEVCHAIN_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    url = devchain_url(port)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hardhat node exited with {process.returncode}; see {log_file}")
        if node_answers(url) is not None:
            return process.pid
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"hardhat node did not answer on {url} within {wait:.0f}s; see {log_file}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def node_stop(pid_file: Path, *, wait: float = 10) -> bool:
    """Stop the node recorded in `pid_file`; True if one was running."""
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


# --- deployment --------------------------------------------------------------------------------


@dataclass
class DeployReport:
    chain: Chain
    deployed: bool
    transactions: int


def _has_code(w3: Web3, address: str) -> bool:
    return len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0


def recorded_deployment_is_live(w3: Web3, chain_id: int) -> bool:
    """True when the database records a dev deployment whose contracts and pools exist on the chain."""
    dex = Dex.objects.filter(chain__chain_id=chain_id).select_related("wrapped_native").first()
    if dex is None:
        return False
    addresses = [dex.router, dex.factory]
    addresses += list(Token.objects.filter(chain__chain_id=chain_id).values_list("address", flat=True))
    pairs = list(Pair.objects.filter(dex=dex).values_list("address", flat=True))
    if len(pairs) < len(DEV_LIQUIDITY):
        return False
    return all(_has_code(w3, a) for a in addresses + pairs)


class _Deployer:
    def __init__(self, w3: Web3):
        self.w3 = w3
        self.account = w3.eth.accounts[0]
        self.transactions = 0

    def send(self, fn, value: int = 0) -> dict:
        tx_hash = fn.transact({"from": self.account, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        self.transactions += 1
        if receipt["status"] != 1:
            raise RuntimeError(f"dev-chain deployment transaction {tx_hash.hex()} reverted")
        return receipt

    def deploy(self, artifact: str, *args):
        spec = load_artifact(artifact)
        factory = self.w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
        receipt = self.send(factory.constructor(*args))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])


def deploy_devchain(*, url: str, log=logger.info) -> DeployReport:
    """Deploy (or find) the dev chain's contracts at `url` and record them; idempotent."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": settings.RPC_TIMEOUT_SECONDS}))
    chain_id = w3.eth.chain_id
    chain, _ = Chain.objects.get_or_create(
        chain_id=chain_id,
        defaults={
            "name": "Hardhat dev chain",
            "is_dev": True,
            "block_time_ms": max(settings.DEVCHAIN_BLOCK_MS, 1000),
        },
    )
    RpcEndpoint.objects.get_or_create(
        chain=chain,
        url=url,
        defaults={"name": "hardhat-local", "kind": RpcEndpoint.Kind.PRIVATE, "rate_limit_per_second": 0},
    )
    if recorded_deployment_is_live(w3, chain_id):
        anchor_record(chain, url)
        log(f"dev chain {chain_id}: contracts already deployed, nothing to do")
        return DeployReport(chain=chain, deployed=False, transactions=0)

    # Mine each deployment transaction at once; interval mining (if configured) stays on, and
    # automine goes back to what it was.
    automine_before = bool(w3.provider.make_request("hardhat_getAutomine", []).get("result"))
    w3.provider.make_request("evm_setAutomine", [True])
    try:
        deployer = _Deployer(w3)
        log("deploying WETH9, UniswapV2Factory, UniswapV2Router02")
        weth = deployer.deploy("WETH9")
        factory = deployer.deploy("UniswapV2Factory", deployer.account)
        router = deployer.deploy("UniswapV2Router02", factory.address, weth.address)
        tokens = {}
        for spec in DEV_TOKENS:
            log(f"deploying {spec.symbol} ({spec.decimals} decimals)")
            if spec.artifact == "DevToken":
                tokens[spec.symbol] = deployer.deploy("DevToken", spec.name, spec.symbol, spec.decimals)
            else:
                tokens[spec.symbol] = deployer.deploy(spec.artifact, spec.name, spec.symbol)
        decimals = {s.symbol: s.decimals for s in DEV_TOKENS}

        log(f"funding dev accounts 1..{FUNDED_ACCOUNTS} with tokens")
        funded = w3.eth.accounts[1 : FUNDED_ACCOUNTS + 1]
        for symbol, token in tokens.items():
            unit = 10 ** decimals[symbol]
            deployer.send(token.functions.mint(deployer.account, 10_000_000 * unit))
            for account in funded:
                deployer.send(token.functions.mint(account, FUND_AMOUNT_UNITS * unit))
            deployer.send(token.functions.approve(router.address, MAX_UINT))

        log("seeding liquidity")
        deadline = w3.eth.get_block("latest")["timestamp"] + 3600
        for a, b, amount_a, amount_b in DEV_LIQUIDITY:
            units_a = amount_a * 10 ** decimals[a]
            if b is None:
                deployer.send(
                    router.functions.addLiquidityETH(
                        tokens[a].address, units_a, 0, 0, deployer.account, deadline
                    ),
                    value=Web3.to_wei(amount_b, "ether"),
                )
            else:
                units_b = amount_b * 10 ** decimals[b]
                deployer.send(
                    router.functions.addLiquidity(
                        tokens[a].address,
                        tokens[b].address,
                        units_a,
                        units_b,
                        0,
                        0,
                        deployer.account,
                        deadline,
                    )
                )
    finally:
        w3.provider.make_request("evm_setAutomine", [automine_before])

    with transaction.atomic():
        _record(chain, weth=weth, factory=factory, router=router, tokens=tokens)
    anchor_record(chain, url)
    log(f"dev chain {chain_id}: deployed with {deployer.transactions} transactions")
    return DeployReport(chain=chain, deployed=True, transactions=deployer.transactions)


def _record(chain: Chain, *, weth, factory, router, tokens: dict) -> None:
    """Record (or re-point, after a node restart) the deployed contracts; one row per thing."""
    weth_token, _ = Token.objects.update_or_create(
        chain=chain,
        symbol="WETH",
        defaults={
            "address": weth.address,
            "name": "Wrapped Ether",
            "decimals": 18,
            "is_wrapped_native": True,
        },
    )
    rows = {"WETH": weth_token}
    for spec in DEV_TOKENS:
        rows[spec.symbol], _ = Token.objects.update_or_create(
            chain=chain,
            symbol=spec.symbol,
            defaults={
                "address": tokens[spec.symbol].address,
                "name": spec.name,
                "decimals": spec.decimals,
                "is_stablecoin": True,
            },
        )
    dex, _ = Dex.objects.update_or_create(
        chain=chain,
        name="Uniswap V2 (dev)",
        defaults={"router": router.address, "factory": factory.address, "wrapped_native": weth_token},
    )
    Pair.objects.filter(dex=dex).delete()
    for a, b, _amount_a, _amount_b in DEV_LIQUIDITY:
        first, second = rows[a], rows[b or "WETH"]
        address = factory.functions.getPair(first.address, second.address).call()
        token0, token1 = sorted((first, second), key=lambda t: int(t.address, 16))
        Pair.objects.create(dex=dex, address=address, token0=token0, token1=token1)


def fund_address(*, url: str, address: str, eth: Decimal, token_units: int) -> int:
    """Send ETH and mint each dev token to `address` from dev account 0; returns transactions sent."""
    w3 = Web3(Web3.HTTPProvider(url))
    deployer = _Deployer(w3)
    target = Web3.to_checksum_address(address)
    sent = w3.eth.send_transaction(
        {"from": deployer.account, "to": target, "value": Web3.to_wei(eth, "ether")}
    )
    w3.eth.wait_for_transaction_receipt(sent, timeout=60)
    count = 1
    minter_abi = load_artifact("DevToken")["abi"]
    for token in Token.objects.filter(chain__chain_id=w3.eth.chain_id, is_wrapped_native=False):
        contract = w3.eth.contract(address=token.address, abi=minter_abi)
        deployer.send(contract.functions.mint(target, token_units * 10**token.decimals))
        count += 1
    return count
