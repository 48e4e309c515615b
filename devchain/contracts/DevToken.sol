// SPDX-License-Identifier: MIT
pragma solidity 0.8.20;

import "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// A development ERC-20 with configurable decimals (the OpenZeppelin 4.9.6 build fixes 18), so the
/// dev chain can hold a 6-decimal stablecoin. Only the deployer can mint.
contract DevToken is ERC20 {
    uint8 private immutable _decimals;
    address public immutable minter;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
        minter = msg.sender;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    function mint(address to, uint256 amount) external {
        require(msg.sender == minter, "DevToken: not minter");
        _mint(to, amount);
    }
}
