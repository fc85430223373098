// SPDX-License-Identifier: MIT
pragma solidity 0.8.17;
import {ERC20} from '@openzeppelin/contracts/token/ERC20/ERC20.sol';

/**
 * @dev A fee-on-transfer ERC-20 for tests: every `transfer` and `transferFrom` burns 1% (rounded
 * down) of the amount from the sender and delivers the rest. The NitroAdjudicator credits a
 * deposit with the full amount while receiving less.
 */
contract FeeToken is ERC20 {
    /**
     * @param owner Receives the whole supply, 10^30 units (not msg.sender, so CREATE2 works).
     */
    constructor(address owner) ERC20('FeeToken', 'FEE') {
        _mint(owner, 10**30);
    }

    /// @dev Burns 1% of `amount` from `from`, moves the remaining 99% to `to`.
    function _transfer(address from, address to, uint256 amount) internal override {
        uint256 fee = amount / 100;
        if (fee > 0) {
            _burn(from, fee);
        }
        super._transfer(from, to, amount - fee);
    }
}
