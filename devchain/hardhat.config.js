// Dev chain for Custos. Mining interval comes from the environment so `devchain up` can mine a
// block every second while tests may switch to automine over RPC (evm_setAutomine).
const interval = parseInt(process.env.DEVCHAIN_BLOCK_MS || "1000", 10);

module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      mining: { auto: interval === 0, interval: interval === 0 ? 0 : interval },
      // 10^9 ETH each (the default is 10,000): a long test session deploys pools and funds wallets
      // on one node hundreds of times, and the deployer must never run dry halfway through.
      accounts: { count: 10, accountsBalance: "1000000000000000000000000000" },
      loggingEnabled: false,
      // Automine would otherwise push every block a second ahead, and the chain clock runs far ahead
      // of the wall clock (swap deadlines then revert with EXPIRED).
      allowBlocksWithSameTimestamp: true,
    },
  },
};
